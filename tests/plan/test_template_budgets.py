"""Templates cannot exhaust memory or time: each hostile template is refused at validate time,
located (file:line:col), with exit 2, before the work is done (plan/budget.py, sandbox.py).

The CLI cases run with ~1 GB of address space and a timeout: the fix is to refuse, never to
allocate and fail.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flux_pipeline.plan import templates
from flux_pipeline.plan.budget import MAX_RENDER_SECONDS, MAX_RESULT
from flux_pipeline.plan.render import MAX_PROMPT_CHARS

from ..manifest.helpers import cli_limited, errors_of, plan_of


def manifest(prompt: str, *, repeat: int = 1) -> str:
    quoted = prompt.replace("\\", "\\\\").replace('"', '\\"')
    return f'version: 1\nname: t\nsteps:\n  - id: s\n    repeat: {repeat}\n    prompt: "{quoted}"\n'


HOSTILE = {
    "format width": "{{ '{:y>2000000}'.format('x') }}",
    "format width 2 GB": "{{ '{:>2000000000}'.format('x') }}",
    "center folded at compile time": "{{ 'x'|center(2000000000) }}",
    "indent folded at compile time": "{{ 'x\\nx'|indent(2000000000) }}",
    "format filter folded at compile time": "{{ '%2000000000s'|format('x') }}",
    "percent operator": "{{ '%2000000000s' % 'x' }}",
    "str method": "{{ 'x'.rjust(2000000000) }}",
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "lipsum": "{{ lipsum(n=100000000) }}",
    "doubling concatenation": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "join of repeated text": "{{ (['x' * 99999] * 100000)|join }}",
    "str.join of repeated text": "{{ ''.join(['x' * 99999] * 100000) }}",
    "string of a list": "{{ (['x' * 99999] * 100000)|string }}",
    "many format fields": "{{ ('{0}' * 30000).format('x' * 99999) }}",
    "replace": "{{ ('a' * 99999)|replace('a', 'b' * 99999) }}",
    "wordwrap": "{{ ('a ' * 40000)|wordwrap(1, wrapstring='x' * 99999) }}",
    "batch fill": "{{ [1]|batch(1000000000, 'x')|list }}",
    "big output in a macro": (
        "{% macro m() %}{% for i in range(100000) %}{{ caller() }}{% endfor %}{% endmacro %}"
        "{% call m() %}{{ 'x' * 99999 }}{% endcall %}"
    ),
}


def test_every_hostile_template_is_refused_by_validate_located_with_exit_2(
    tmp_path: Path,
) -> None:
    names = {case: f"m{i}.yaml" for i, case in enumerate(HOSTILE)}
    for case, prompt in HOSTILE.items():
        (tmp_path / names[case]).write_text(manifest(prompt, repeat=10000))
    started = time.monotonic()
    done = cli_limited(tmp_path, "validate", *names.values(), timeout=120)
    assert time.monotonic() - started < 100
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    lines = output.splitlines()
    for case, name in names.items():
        mine = [line for line in lines if line.startswith(f"{name}:")]
        assert len(mine) == 1, (case, output[-3000:])
        assert mine[0].startswith(f"{name}:6:13: steps[0].prompt: template "), (case, mine)


def test_the_104_byte_manifest_is_refused_by_plan_and_run_simulate(tmp_path: Path) -> None:
    text = manifest("{{ '{:y>2000000}'.format('x') }}", repeat=10000)
    (tmp_path / "m.yaml").write_text(text)
    for command in (["plan", "m.yaml"], ["run", "--simulate", "m.yaml"]):
        done = cli_limited(tmp_path, *command)
        assert done.returncode == 2, (command, done.stderr[-2000:])
        output = done.stdout + done.stderr
        assert "m.yaml:6:13: steps[0].prompt: template refused by the sandbox" in output
        assert "Traceback" not in output


def test_a_template_rendering_for_longer_than_the_budget_is_stopped() -> None:
    slow = "{% for i in range(100000) recursive %}{% if loop.depth < 4 %}{{ loop(range(100000)) }}{% endif %}{% endfor %}"  # noqa: E501
    started = time.monotonic()
    with pytest.raises(templates.TemplateProblem, match=r"longer than|too much work"):
        templates.render(templates.compile_template(slow), templates.context({}))
    assert time.monotonic() - started < MAX_RENDER_SECONDS + 3


def test_nothing_is_evaluated_when_a_template_is_compiled() -> None:
    started = time.monotonic()
    for source in ("{{ 'x'|center(2000000000) }}", "{{ '%2000000000s'|format('x') }}"):
        compiled = templates.compile_template(source)
        assert not isinstance(compiled, str)
        with pytest.raises(templates.TemplateProblem, match="larger than"):
            templates.render(compiled, templates.context({}))
    assert time.monotonic() - started < 5


def test_a_rendered_prompt_is_capped(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, manifest(f"{{{{ 'x' * {MAX_PROMPT_CHARS + 1} }}}}"))
    assert errors == [
        f"m.yaml:6:13: steps[0].prompt: the prompt has {MAX_PROMPT_CHARS + 1} characters "
        f"(task s#1); at most {MAX_PROMPT_CHARS}"
    ]
    plain = "y" * (MAX_PROMPT_CHARS + 1)
    assert "at most" in errors_of(tmp_path, manifest(plain))[0]


def test_a_template_may_render_up_to_its_limit_but_no_more() -> None:
    ctx = templates.context({})
    big = templates.compile_template(f"{{{{ 'x' * {MAX_RESULT} }}}}")
    assert len(templates.render(big, ctx)) == MAX_RESULT
    twice = templates.compile_template(f"{{{{ 'x' * {MAX_RESULT} }}}}{{{{ 'x' }}}}")
    with pytest.raises(templates.TemplateProblem, match=f"more than {MAX_RESULT} characters"):
        templates.render(twice, ctx)


def test_ordinary_templates_render_as_before(tmp_path: Path) -> None:
    source = (
        "{{ 'a' ~ 'b' }} {{ 'Oil Painting!'|slug }} {{ '%s-%03d'|format('a', 7) }} "
        "{{ '{:>4}|{}'.format('a', 2) }} {{ ['a', 'b']|join(', ') }} {{ 3 * 4 }} {{ 'ab' * 2 }} "
        "{% for i in range(3) %}{{ loop.index }}/{{ loop.length }}{% endfor %} "
        "{{ 'x'|center(5) }}|{{ 'a\nb'|indent(2) }}|{{ 'a-b'|replace('-', '+') }} "
        "{{ '%d%%' % 50 }} {{ 2 ** 10 }} {{ [1, 2] + [3] }} {{ 'big'.upper().center(7, '*') }}"
    )
    rendered = templates.render(templates.compile_template(source), templates.context({}))
    assert rendered == (
        "ab oil-painting a-007    a|2 a, b 12 abab 1/32/33/3   x  |a\n  b|a+b "
        "50% 1024 [1, 2, 3] **BIG**"
    )
    plan = plan_of(tmp_path, manifest("{{ lipsum(1, false, 5, 6)|wordcount > 0 }}"))
    assert plan.tasks[0].request["input"]["prompt"] == "True"


def test_a_plan_holding_too_much_text_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flux_pipeline.plan import expand

    text = manifest("{{ 'x' * 5000 }} {{ repeat_index }}", repeat=100)
    assert len(plan_of(tmp_path, text).tasks) == 100
    monkeypatch.setattr(expand, "MAX_PLAN_CHARS", 200_000)
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].startswith(
        "m.yaml:4:5: steps[0]: the plan would hold more than 200000 characters of requests"
    )


def test_the_renders_of_one_plan_share_a_time_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flux_pipeline.plan import budget

    slow = "{% for i in range(20000) %}{% endfor %}{{ repeat_index }}"  # a few ms per task
    monkeypatch.setattr(budget, "MAX_PLAN_RENDER_SECONDS", 0.2)
    started = time.monotonic()
    errors = errors_of(tmp_path, manifest(slow, repeat=10000))
    assert time.monotonic() - started < 10
    assert len(errors) == 1
    assert errors[0].startswith(
        "m.yaml:6:13: steps[0].prompt: template refused by the sandbox: the templates of this "
        "manifest take longer than 0.2 s to render in all (in task s#"
    )
    monkeypatch.setattr(budget, "MAX_PLAN_RENDER_SECONDS", 300.0)
    assert len(plan_of(tmp_path, manifest(slow, repeat=20)).tasks) == 20
