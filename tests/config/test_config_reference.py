"""The generated configuration reference describes every section and key."""

from fedstrata.config.reference import config_reference


def test_every_section_and_key_has_a_description():
    """Issue 11 defect 22: ``config-reference`` had blank descriptions for whole sections."""
    lines = config_reference().splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("## `")]
    assert len(heads) >= 15
    undocumented = [lines[i] for i in heads if not lines[i + 2].strip()]
    assert not undocumented, f"sections without a description: {undocumented}"
    rows = [line for line in lines if line.startswith("| `")]
    blank = [row.split("|")[1].strip() for row in rows if not row.split("|")[4].strip()]
    assert not blank, f"keys without a description: {blank}"
