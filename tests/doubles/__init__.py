"""TEST DOUBLES for systems that cannot run on a developer or CI machine.

- :mod:`doubles.k8s_cluster`: a Kubernetes API server DOUBLE (real REST paths and JSON, spoken to by the
  unchanged official ``kubernetes`` client) with controller loops that act like the Deployment and ReplicaSet
  controllers, a scheduler and a kubelet whose "pods" are real processes on this machine (the real
  ``kfp-tabular fetch-model`` against SeaweedFS, and ``kfp-tabular serve``, the local stand-in for TF Serving).
- :mod:`doubles.kfp_api`: a KFP API server DOUBLE speaking the v2beta1 REST paths the unchanged ``kfp.Client``
  uses (healthz, pipelines and versions, experiments, runs), validating packages and run parameters as the real
  server does, with multi-user authorization errors and runs that move through their states.
- :mod:`doubles.skewed_serve`: a TF Serving stand-in that loads the model and answers WRONG (fault injection).

Nothing here is shipped; nothing here is a mock of the code under test.
"""
