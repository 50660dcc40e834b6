"""Constants and a tiny pipeline shared by the submit tests (imported by name: this folder is on sys.path)."""

from kfp import dsl

PROFILE = "kubeflow-user-example-com"
TOKEN = "projected-sa-token-for-ml-pipeline"


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def repeat(n: int, ratio: float, flag: bool, text: str) -> str:
    return text * n if flag else str(ratio)


@dsl.pipeline(name="tiny")
def tiny(n: int, ratio: float = 0.5, flag: bool = False, text: str = "x"):
    """A pipeline with one required parameter and one of each other kind."""
    repeat(n=n, ratio=ratio, flag=flag, text=text)
