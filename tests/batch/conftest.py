"""Session fixture ``templates``: the synthetic dumps of tests/batch/synthetic.py."""

from __future__ import annotations

import pytest

from tests.batch.synthetic import Templates, make_templates


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return make_templates(tmp_path_factory.mktemp("batch-templates"))
