"""What the pipeline does on a Kubernetes cluster: deploy to KServe, run training jobs, and the manifests both generate.

- `kube`: the image, the Kubernetes API (one line when no cluster answers) and the pod hardening every workload gets;
- `deploy`: the InferenceService (and its ServingRuntime) the deploy step creates;
- `training_job`: the TrainJob or PyTorchJob the distributed train step creates and waits for;
- `manifests`: k8s/'s generated files, written from the same builders (`python -m components.cluster.manifests`).
"""
