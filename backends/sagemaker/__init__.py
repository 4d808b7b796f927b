"""What SageMaker is sent, built once for both backends, and the local twin that runs it on this machine.

- ``backends.sagemaker.training``: the ``CreateTrainingJob`` request (hyperparameters checked and encoded, the
  ``sourcedir.tar.gz`` bundle = ``model/`` + ``requirements.txt``). The aws backend sends it with boto3.
- ``backends.sagemaker.local_job``: runs such a request here the way the SageMaker platform runs it — one
  ``/opt/ml``-shaped folder per instance, the training container's own toolkit (``sagemaker-training`` with the
  PyTorch toolkit's entry) per instance — used by the local backend and by the moto world in the tests.

Nothing here imports boto3: both modules are plain Python over dicts and files.
"""
