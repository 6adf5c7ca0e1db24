"""The risk scorer: what each rule finds, through shells and chains, and what it must not find."""

from __future__ import annotations

import pytest

from armor_rx.model.risk import RULES, PreviousStep, score_command, score_request


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        (["rm", "-rf", "build"], "destructive"),
        (["rm", "-r", "--force", "src"], "destructive"),
        ("rm -Rf /tmp/x", "destructive"),
        (["sh", "-c", "make && rm -rf build"], "destructive"),
        (["bash", "-lc", "cd app; git reset --hard HEAD~3"], "destructive"),
        ("git clean -fdx", "destructive"),
        ("git push --force origin main", "destructive"),
        ("dd if=/dev/zero of=disk.img bs=1M count=1", "destructive"),
        ("mkfs.ext4 /dev/sdb1", "destructive"),
        ("find . -name '*.orig' -delete", "destructive"),
        ("find . -type f -exec rm {} +", "destructive"),
        ("sudo -u root chmod -R 777 .", "recursive_permissions"),
        ("chown --recursive me:me /srv", "recursive_permissions"),
        ("truncate -s 0 app.log", "truncate"),
        ("echo hi > notes.txt", "overwrite"),
        ("git checkout -- .", "overwrite"),
        ("rm notes.txt", "remove"),
        ("apt-get install -y curl", "package_install"),
        ("DEBIAN_FRONTEND=noninteractive apt install -y jq", "package_install"),
        ("pip install requests", "package_install"),
        (["python3", "-m", "pip", "install", "-e", "."], "package_install"),
        ("npm ci", "package_install"),
        ("yarn add left-pad", "package_install"),
        ("cargo install ripgrep", "package_install"),
        ("alembic upgrade head", "migration"),
        ("bin/rails db:migrate", "migration"),
        ("python manage.py migrate", "migration"),
        ("npx prisma migrate deploy", "migration"),
        ("flyway migrate", "migration"),
        ("timeout 60 nice -n 5 rm -rf node_modules", "destructive"),
        ("make test | tee out.log; rm -rf dist", "destructive"),
        ('echo "unclosed; rm -rf /', "destructive"),  # shlex fails: still found
    ],
)
def test_each_rule_finds_its_command(command: object, rule: str) -> None:
    score = score_command(command)  # type: ignore[arg-type]
    assert rule in [r.rule for r in score.reasons], score
    assert score.score >= RULES[rule]


@pytest.mark.parametrize(
    "command",
    [
        ["ls", "-la"],
        "make test",
        "echo 'rm -rf /'",            # quoted text is not a command
        ["grep", "-r", "rm -rf", "."],
        "cat a >> b",                 # appending loses nothing
        "cmd > /dev/null 2>&1",
        "git status && git diff",
        "pip list",
        "npm test",
        "alembic history",
        "chmod 644 a.txt",            # not recursive
    ],
)
def test_harmless_commands_score_zero(command: object) -> None:
    assert score_command(command).score == 0  # type: ignore[arg-type]


def test_reasons_name_the_offending_part_and_add_up_capped() -> None:
    score = score_command("pip install x && alembic upgrade head && rm -rf build && echo > f")
    assert [r.rule for r in score.reasons] == ["destructive", "migration", "package_install", "overwrite"]
    assert score.reasons[0].detail == "rm -rf build"
    assert score.score == 100  # 60 + 40 + 30 + 20, capped
    assert score.to_payload()["reasons"][0] == {"rule": "destructive", "detail": "rm -rf build", "points": 60}


def test_the_previous_step_counts_when_long_or_wide() -> None:
    assert score_command("ls", PreviousStep(duration=10, files_touched=3)).score == 0
    long = score_command("ls", PreviousStep(duration=600, files_touched=3))
    assert [r.rule for r in long.reasons] == ["long_previous_step"] and "600s" in long.reasons[0].detail
    wide = score_command("ls", PreviousStep(duration=None, files_touched=120), many_files=100)
    assert [r.rule for r in wide.reasons] == ["many_files_touched"]
    assert score_command("ls", PreviousStep(files_touched=120), many_files=200).score == 0


def test_a_request_payload_is_scored_from_its_command() -> None:
    assert score_request({"command": ["sh", "-c", "git clean -fd"]}).score == RULES["destructive"]
    assert score_request({"command": "npm install"}).score == RULES["package_install"]
    assert score_request({}).score == 0


def test_weights_are_the_callers_to_change() -> None:
    assert score_command("rm -rf x", weights={**RULES, "destructive": 90}).score == 90


def test_docstring_examples():
    import doctest

    import armor_rx.model.risk

    result = doctest.testmod(armor_rx.model.risk)
    assert result.attempted >= 3 and result.failed == 0
