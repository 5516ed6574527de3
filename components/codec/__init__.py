"""Training an EnCodec audio tokenizer: the quantizer bridge, losses, discriminator, data and metrics that
`components.train_codec` puts together."""


class CodecError(ValueError):
    """The codec cannot be trained or copied (corpus, audio or checkpoint unusable); the message names it."""
