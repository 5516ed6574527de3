"""`python -m serving.front ...`: the front as a server (k8s/base/front.yaml, benchmarks/serving.py start it so)."""

from serving.front.app import main

if __name__ == "__main__":
    main()
