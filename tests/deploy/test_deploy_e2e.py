"""deploy_tf_serving end to end: SeaweedFS, the Kubernetes cluster double, real fetch-model and serving processes."""

from __future__ import annotations

import pytest
from deploy_stack import NAMESPACE, make_stack

pytestmark = [pytest.mark.s3, pytest.mark.deploy]


@pytest.fixture(scope="module")
def stack(cluster, s3_settings, golden_files, tmp_path_factory):
    return make_stack(cluster, tmp_path_factory.mktemp("stack"), NAMESPACE, s3_settings, golden_files)


def test_v1_deploys(stack, tiny_models, s3_env) -> None:
    published = stack.publish(tiny_models["regression"])
    result = stack.deploy(published)
    print(result.report_markdown)
    assert result.status == "deployed"
