"""`python -m serving.predictor --model_dir=...`: what the ServingRuntime (k8s/base/serving/servingruntime.yaml),
components/cluster/deploy.py and serving/launch.py run."""

import sys

from serving.predictor.server import main

if __name__ == "__main__":
    sys.exit(main())
