"""Fixtures for simulator tests; the fakes themselves live in ``simfakes``."""

import pytest
from simfakes import FakeData


@pytest.fixture
def fake_data() -> FakeData:
    return FakeData()
