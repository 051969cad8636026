"""People into groups before they sign in: the page's names and a CSV file (pure, tables)."""

from __future__ import annotations

import pytest

from services.admin import people
from services.admin.members import MAX_ROWS, plan_csv, plan_group


@pytest.mark.parametrize("text, users, groups, errors", [
    ("user,groups\nann,student\nBen,student;researcher\ncarl,\n", ("ann", "ben", "carl"),
     {"student": ("ann", "ben"), "researcher": ("ben",)}, ()),
    # no header; spaces between groups; extra columns (an e-mail) ignored; comments and blank lines
    ("ann,student researcher,ann@lab.example\n\n# a comment\ndana,staff\n", ("ann", "dana"),
     {"student": ("ann",), "researcher": ("ann",), "staff": ("dana",)}, ()),
    # a bad row is reported, the others go ahead
    ("user,groups\nann,student\n../etc,student\nbob,bad group!\n", ("ann",), {"student": ("ann",)},
     ("line 3: '../etc' is not a user name (letters, digits, '.', '_', '@', '-')",
      "line 4: 'group!' is not a group name")),
    # the same person twice: once
    ("ann,student\nann,student;staff\n", ("ann",), {"student": ("ann",), "staff": ("ann",)}, ()),
    ("", (), {}, ("The file names nobody: one 'user,groups' per line, e.g. 'ann,student'.",)),
])
def test_csv(text, users, groups, errors):
    plan = plan_csv(text)
    assert (plan.users, plan.groups, plan.errors) == (users, groups, errors)


def test_csv_size_is_bounded():
    assert plan_csv("\n".join(f"u{i},g" for i in range(MAX_ROWS + 1))).errors[0].startswith("The file has more")


@pytest.mark.parametrize("group, text, users, errors", [
    ("student", "ann, ben\ncarl", ("ann", "ben", "carl"), ()),
    ("student", "  ", (), ("Name at least one person.",)),
    ("bad group", "ann", (), ("'bad group' is not a group name",)),
    # names are quoted through the validation layer: bounded, whatever a form sends
    ("g" * 300, "ann", (), ("'" + "g" * 40 + "'... (300 characters) is not a group name",)),
    ("student", "ann; root?", ("ann",), ("'root?': 'root?' is not a user name (letters, digits, '.', '_', '@', '-')",)),
])
def test_group_form(group, text, users, errors):
    plan = plan_group(group, text)
    assert plan.users == users and plan.errors == errors
    if users:
        assert plan.groups == {group: users}


@pytest.mark.parametrize("added, quota_groups, note", [
    ({"researcher": ["ann"]}, ["researcher"], None),
    ({"reseacher": ["ann"]}, ["researcher", "student"],
     "Note: group reseacher has no quota in gpulab.yaml (quota groups: researcher, student), so its people get "
     "the default quota; check the name, or give it a quota under quotas.groups."),
    ({"a": ["x"], "b": ["y"]}, [], "Note: groups a, b have no quota in gpulab.yaml (quota groups: none), so their"),
])
def test_a_group_without_a_quota_is_pointed_out(added, quota_groups, note):
    """A typo of a quota group's name made a new group silently: its people got the default quota."""
    result = {"created": [], "added": added, "errors": [], "people": 1, "ok": True}
    text = people.summary(result, quota_groups)
    assert (note in text) if note else ("Note" not in text), text
    assert people.without_quota(result, quota_groups) == ([] if note is None else sorted(added))
