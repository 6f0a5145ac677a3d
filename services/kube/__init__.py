"""Flywheel on Kubernetes: policy servers per robot group, and Ray on KubeRay.

``manifests`` builds the policy servers' objects as plain dicts, ``raycluster`` the
autoscaling RayCluster and the training RayJobs, ``validation`` checks them offline against
the Kubernetes OpenAPI schemas (bundled by ``kubernetes-validate``) and KubeRay's CRD fields
(``crds``), and ``backend.KubernetesBackend`` applies them with the official ``kubernetes``
client. No Kubernetes API server runs on the development machines: the tests run the backend
against a stand-in HTTP server (``tests/kube/apiserver.py``), not a real cluster.
"""
