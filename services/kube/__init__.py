"""Flywheel on Kubernetes: policy servers per robot group and training as KubeRay RayJobs.

``manifests`` builds the objects as plain dicts, ``validation`` checks them offline against
the Kubernetes OpenAPI schemas (bundled by ``kubernetes-validate``) and KubeRay's CRD fields
(``crds``), and ``backend.KubernetesBackend`` applies them with the official ``kubernetes``
client. No Kubernetes API server runs on the development machines: the tests run the backend
against a stand-in HTTP server (``tests/kube/apiserver.py``), not a real cluster.
"""
