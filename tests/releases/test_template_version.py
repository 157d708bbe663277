"""Every version records the template release it is rendered with; Upgrade moves to the new one."""

from __future__ import annotations

import pytest

from pipelines.authoring import codegen
from pipelines.authoring import services as authoring
from pipelines.deployments import services as deploy
from pipelines.models import PipelineVersion


def test_the_template_file_is_the_pinned_release():
    """Changed the template? Add a release to codegen.TEMPLATE_RELEASES with its new hash."""
    assert codegen.template_sha256() == codegen.TEMPLATE_RELEASES[codegen.TEMPLATE_VERSION]


def test_a_rendered_dag_names_its_template(envs, pipeline):
    version = pipeline.versions.get()
    source = deploy.render_for(version, envs["dev"]).source
    assert f"'template': 'partitioned_load {codegen.TEMPLATE_VERSION}'" in source


def test_new_versions_record_the_current_template(pipeline):
    version = pipeline.versions.get()
    assert (version.template_version, version.template_sha256) == codegen.current_template()
    assert version.template_is_current


@pytest.fixture
def old_template(pipeline):
    PipelineVersion.objects.filter(pipeline=pipeline).update(
        template_version="2026.10.1", template_sha256="0" * 64
    )
    return pipeline.versions.get()


def test_a_version_on_an_older_template_is_not_deployed_but_upgraded(
    old_template, pipeline, envs, alice
):
    with pytest.raises(deploy.DeployError, match="made with template partitioned_load 2026.10.1"):
        deploy.deployment_request(version=old_template, environment=envs["dev"], by=alice)

    upgraded = authoring.pipeline_upgrade(pipeline=pipeline, by=alice)

    assert upgraded.number == 2
    assert upgraded.spec_json == old_template.spec_json
    assert upgraded.template_is_current
    assert upgraded.change_note == f"Upgrade template 2026.10.1 → {codegen.TEMPLATE_VERSION}"
    assert pipeline.audit_events.filter(action="pipeline_upgraded").exists()
    assert authoring.pipeline_upgrade(pipeline=pipeline, by=alice) is None  # nothing to do
    deploy.deployment_request(version=upgraded, environment=envs["dev"], by=alice)
