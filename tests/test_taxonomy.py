"""Label taxonomies load, validate, and explain what is wrong with a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behavior_rag.errors import TaxonomyError
from behavior_rag.taxonomy import Label, Taxonomy, load_taxonomy

PERSONA_NAMES = ("focused_buyer", "comparison_shopper", "deal_hunter", "window_shopper",
                 "cart_abandoner", "impulse_buyer", "loyal_repeat_buyer", "gift_shopper")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GOOD_YAML = """\
name: my-labels
version: 2
description: two labels of my own
labels:
  - name: buyer
    description: Buys something.
    signals: [purchase]
  - name: browser
    description: Only looks.
"""


def test_default_taxonomy_has_the_eight_personas_with_descriptions_and_signals():
    tax = load_taxonomy()
    assert tax.name == "shopper-personas"
    assert tax.names == PERSONA_NAMES
    for label in tax.labels:
        assert label.description.strip()
        assert len(label.signals) >= 3


def test_get_returns_the_label_and_unknown_label_raises_with_known_names():
    tax = load_taxonomy("personas")
    assert tax.get("gift_shopper").name == "gift_shopper"
    with pytest.raises(TaxonomyError) as exc:
        tax.get("bargain_hunter")
    assert exc.value.value == "bargain_hunter"
    assert "deal_hunter" in exc.value.context["known"]
    assert "bargain_hunter" in str(exc.value)


def test_users_own_yaml_and_json_files_load(tmp_path):
    tax = load_taxonomy(_write(tmp_path / "mine.yaml", GOOD_YAML))
    assert (tax.name, tax.version, tax.names) == ("my-labels", 2, ("buyer", "browser"))
    assert tax.get("browser").signals == []

    as_json = _write(tmp_path / "mine.json", json.dumps(tax.model_dump()))
    assert load_taxonomy(str(as_json)) == tax


def test_content_hash_is_stable_and_changes_when_any_text_changes(tmp_path):
    a = load_taxonomy(_write(tmp_path / "a.yaml", GOOD_YAML))
    b = load_taxonomy(_write(tmp_path / "b.yml", GOOD_YAML))
    assert a.content_hash == b.content_hash and len(a.content_hash) == 64
    edited = load_taxonomy(_write(tmp_path / "c.yaml", GOOD_YAML.replace("Only looks.",
                                                                         "Only looks around.")))
    assert edited.content_hash != a.content_hash
    assert load_taxonomy().content_hash != a.content_hash


def test_duplicate_label_name_is_reported_on_the_labels_field(tmp_path):
    path = _write(tmp_path / "dup.yaml", GOOD_YAML.replace("name: browser", "name: buyer"))
    with pytest.raises(TaxonomyError) as exc:
        load_taxonomy(path)
    assert exc.value.field == "labels"
    assert exc.value.file == str(path)
    assert "duplicate label name 'buyer'" in str(exc.value)


def test_missing_field_names_the_label_and_field(tmp_path):
    path = _write(tmp_path / "missing.yaml",
                  GOOD_YAML.replace("    description: Only looks.\n", ""))
    with pytest.raises(TaxonomyError) as exc:
        load_taxonomy(path)
    assert exc.value.field == "labels.1.description"
    assert "labels.1.description" in str(exc.value) and str(path) in str(exc.value)


def test_label_names_must_be_snake_case(tmp_path):
    path = _write(tmp_path / "camel.yaml", GOOD_YAML.replace("name: buyer", "name: BigBuyer"))
    with pytest.raises(TaxonomyError) as exc:
        load_taxonomy(path)
    assert exc.value.field == "labels.0.name"
    assert exc.value.value == "BigBuyer"


def test_unparseable_missing_and_unknown_files_raise_taxonomy_error(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "name: x\nlabels: [unclosed\n")
    with pytest.raises(TaxonomyError) as exc:
        load_taxonomy(bad)
    assert exc.value.file == str(bad)

    with pytest.raises(TaxonomyError, match="not found"):
        load_taxonomy(tmp_path / "nope.yaml")
    with pytest.raises(TaxonomyError) as exc:
        load_taxonomy("no_such_taxonomy")
    assert "personas" in exc.value.context["known"]
    with pytest.raises(TaxonomyError, match="mapping"):
        load_taxonomy(_write(tmp_path / "list.yaml", "- just\n- a list\n"))


def test_models_can_be_built_in_code():
    tax = Taxonomy(name="tiny", labels=[Label(name="buyer", description="Buys.")])
    assert "buyer" in tax and "seller" not in tax


def test_compact_prompt_lists_summaries_and_keeps_the_instructions(tmp_path):
    """The fine-tune's prompt shows one short line per label (its summary, else its
    description), no signals, and the same data-not-instructions wording as the full one."""
    from behavior_rag.prompts import load_prompt

    tax = load_taxonomy()
    full = load_prompt("classify").render("system", taxonomy=tax)
    compact = load_prompt("classify_compact").render("system", taxonomy=tax)
    assert "- deal_hunter: hunts for sales and cheap items across categories" in compact
    assert "Signals:" in full and "Signals:" not in compact
    assert len(compact) < len(full) / 2
    for line in full.splitlines()[:4]:
        assert line in compact  # the injection guard is word for word
    base, short = load_prompt("classify"), load_prompt("classify_compact")
    assert (short.user, short.answer_prefix, short.reask) == (base.user, base.answer_prefix,
                                                              base.reask)  # `extends: classify`
    own = load_taxonomy(_write(tmp_path / "mine.yaml", GOOD_YAML))
    assert "- browser: Only looks." in load_prompt("classify_compact").render(
        "system", taxonomy=own)
