"""What a generation request may ask for: one pydantic model, narrowed to a front's limits, so bad requests get
a 422 (or a WebSocket error) naming the field before any work starts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, create_model

from model.generation_params import GenerationParams


class GenerateRequest(BaseModel):
    """One generation. `request_models` narrows prompt length and duration to a front's limits."""

    # A misspelt field is an error, not a silent default; NaN and +-Infinity (which JSON parsers and query strings
    # let through as floats) are refused as "not a finite number", not compared with a bound they slip past.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field("", description="What the music should be; empty for unconditional generation.")
    duration: float = Field(8.0, gt=0, description="Seconds of audio.")
    guidance: float = Field(
        GenerationParams.guidance_scale, ge=1.0, le=20.0, description="Classifier-free guidance scale; 1 turns it off."
    )
    temperature: float = Field(
        GenerationParams.temperature, ge=0.0, le=10.0, description="Sampling temperature; 0 is greedy."
    )
    top_k: int = Field(
        GenerationParams.top_k, ge=0, le=100_000, description="Sample among the k likeliest codes; 0 turns it off."
    )
    top_p: float = Field(GenerationParams.top_p, ge=0.0, le=1.0, description="Nucleus sampling mass; 0 turns it off.")
    seed: int | None = Field(None, ge=0, lt=2**63, description="Fixes the result; leave it out to draw one.")

    def params(self) -> GenerationParams:
        return GenerationParams(
            duration=self.duration,
            guidance_scale=self.guidance,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
        )


def request_models(
    max_prompt_chars: int, max_duration: float, default_duration: float
) -> tuple[type[GenerateRequest], type[GenerateRequest]]:
    """(JSON body model, query-string model): the limits show in the OpenAPI schema; the query model also takes
    `api_key`, since EventSource cannot send headers."""
    body = create_model(
        "GenerateRequest",
        __base__=GenerateRequest,
        prompt=(str, Field("", max_length=max_prompt_chars, description="What the music should be; may be empty.")),
        duration=(
            float,
            Field(min(default_duration, max_duration), gt=0, le=max_duration, description="Seconds of audio."),
        ),
    )
    query = create_model(
        "GenerateQuery", __base__=body, api_key=(str | None, Field(None, description="The API key, when one is set."))
    )
    return body, query
