"""docker-compose.yml and deploy/Dockerfile: valid against the Compose Specification schema
and consistent with the code they start (CLI commands, queues, settings, files)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft201909Validator

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SCHEMA_FILE = ROOT / "deploy" / "compose-spec.json"
IMAGE = "invoicechain"


@pytest.fixture(scope="module")
def compose() -> dict:
    # PyYAML's safe loader resolves the `<<: *app` merge keys, as Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator() -> Draft201909Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The schema names draft 2019-09 with a trailing "#" that jsonschema does not look up:
    # pick that draft explicitly rather than fall back to the latest.
    Draft201909Validator.check_schema(schema)
    return Draft201909Validator(schema)


def our_services(compose: dict) -> dict[str, dict]:
    """The services that run this project's image (not postgres or redis)."""
    return {
        name: svc for name, svc in compose["services"].items()
        if "build" in svc or str(svc.get("image", "")).split(":")[0] == IMAGE
    }


def command_of(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def environment_of(svc: dict) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict((item.split("=", 1) + [None])[:2] for item in env)
    return env


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


# --- the schema ------------------------------------------------------------------------------


def test_vendored_schema_is_the_published_file():
    lines = SCHEMA_FILE.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[1].lstrip().startswith('"$comment"') and "Apache License 2.0" in lines[1]
    published = re.search(r"sha256 of the file as shipped: ([0-9a-f]{64})", lines[1]).group(1)
    assert hashlib.sha256((lines[0] + "".join(lines[2:])).encode()).hexdigest() == published


def test_compose_file_matches_the_compose_spec(compose, validator):
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_schema_rejects_a_broken_compose_file(compose, validator):
    """The validator really checks: a misspelt key and a wrong type are reported."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["comand"] = broken["services"]["api"].pop("command")
    broken["services"]["redis"]["ports"] = "6379:6379"
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("'comand'" in m for m in messages)
    assert any("is not of type 'array'" in m for m in messages)


# --- consistency with the code ---------------------------------------------------------------


def test_every_build_has_its_dockerfile(compose):
    builds = {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}
    assert builds, "no service builds the image"
    for name, build in builds.items():
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"


def invoicechain_commands(compose: dict) -> list[tuple[str, list[str]]]:
    """(where, argv) of every `invoicechain ...` run by a service or by the image build."""
    found = [(f"service {name}", command_of(svc)) for name, svc in our_services(compose).items()]
    for word, args in dockerfile_instructions():
        if word == "CMD":
            found.append(("Dockerfile CMD", exec_form(args)))
        elif word == "RUN":
            found += [("Dockerfile RUN", shlex.split(part)) for part in re.split(r"&&|;", args)]
    return [(where, argv) for where, argv in found if argv and argv[0] == "invoicechain"]


def assert_cli_accepts(commands: list[tuple[str, list[str]]]) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    for where, argv in commands:
        # With the command's own options before --help, a misspelt option fails here too.
        result = runner.invoke(app, [*argv[1:], "--help"])
        assert result.exit_code == 0, f"{where}: `{shlex.join(argv)}` is not a valid command:\n{result.output}"


def test_service_commands_exist_in_the_cli(compose):
    commands = [c for c in invoicechain_commands(compose) if c[0].startswith("service")]
    assert {argv[1] for _, argv in commands} == {"api", "worker", "flower"}
    assert_cli_accepts(commands)


def test_image_build_commands_exist_in_the_cli(compose):
    commands = [c for c in invoicechain_commands(compose) if c[0].startswith("Dockerfile")]
    assert {argv[1] for _, argv in commands} >= {"api", "models"}
    assert_cli_accepts(commands)


def test_workers_cover_every_queue(compose):
    from cli.run import worker
    from workers.celery_app import QUEUES

    default = worker.__defaults__[0]  # the --queues default of `invoicechain worker`
    served: set[str] = set()
    for name, svc in our_services(compose).items():
        argv = command_of(svc)
        if argv[:2] != ["invoicechain", "worker"]:
            continue
        value = next((argv[i + 1] for i, a in enumerate(argv) if a == "--queues"), None)
        value = value or next((a.split("=", 1)[1] for a in argv if a.startswith("--queues=")), default)
        queues = {q.strip() for q in value.split(",") if q.strip()}
        assert queues <= set(QUEUES), f"{name} consumes unknown queue(s) {queues - set(QUEUES)}"
        served |= queues
    assert served == set(QUEUES), f"no worker consumes {set(QUEUES) - served}"


def test_celery_and_streamlit_commands_are_well_formed(compose):
    from importlib import import_module

    from celery import Celery
    from celery.bin.celery import celery

    global_options = {opt for param in celery.params for opt in param.opts}
    checked = set()
    for name, svc in our_services(compose).items():
        argv = command_of(svc)
        if argv and argv[0] == "celery":
            sub = next(i for i, a in enumerate(argv[1:], start=1)
                       if not a.startswith("-") and argv[i - 1] not in ("-A", "--app", "-b", "--broker"))
            assert argv[sub] in celery.commands, f"{name}: unknown celery command {argv[sub]}"
            misplaced = [a for a in argv[sub + 1 :] if a.split("=", 1)[0] in global_options]
            assert not misplaced, f"{name}: celery option(s) {misplaced} must come before `{argv[sub]}`"
            module = argv[argv.index("-A") + 1]
            assert isinstance(import_module(module).app, Celery), f"{name}: {module} has no Celery `app`"
            checked.add("celery")
        elif argv and argv[0] == "streamlit":
            assert argv[1] == "run" and (ROOT / argv[2]).is_file(), f"{name}: no app at {argv[2]}"
            checked.add("streamlit")
    assert checked == {"celery", "streamlit"}


def test_environment_is_made_of_settings(compose):
    from invoicechain.config import Settings

    known = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        known |= set(getattr(alias, "choices", [alias])) if alias else {f"INVOICECHAIN_{name}".upper()}
    for name, svc in our_services(compose).items():
        unknown = sorted(k for k in environment_of(svc) if k.upper() not in {n.upper() for n in known})
        assert not unknown, f"{name} sets {unknown}, which no setting reads"


def test_service_urls_point_at_services_of_the_file(compose):
    services = compose["services"]
    pg_env = environment_of(services["postgres"])
    api_cmd = command_of(services["api"])
    for name, svc in our_services(compose).items():
        env = environment_of(svc)
        db = urlsplit(env["DATABASE_URL"])
        assert db.hostname in services and db.username == pg_env["POSTGRES_USER"]
        assert db.password == pg_env["POSTGRES_PASSWORD"] and db.path.lstrip("/") == pg_env["POSTGRES_DB"]
        assert urlsplit(env["REDIS_URL"]).hostname in services
        api = urlsplit(env["INVOICECHAIN_API_URL"])
        assert api.hostname == "api" and str(api.port) == api_cmd[api_cmd.index("--port") + 1], name
    probe = " ".join(services["api"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:\d+(/[\w/-]*)", probe).group(1)
    from api.main import app

    assert path in app.openapi()["paths"]


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_basics():
    steps = dockerfile_instructions()
    words = [w for w, _ in steps]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    from packaging.specifiers import SpecifierSet

    base = next(args for w, args in steps if w == "FROM")
    version = re.match(r"python:(\d+\.\d+)", base)
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    assert version and version.group(1) in requires, f"base image {base} is outside requires-python {requires}"

    torch_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch=="))
    assert torch_pin == "torch==2.13.0"
    assert any(w == "RUN" and torch_pin in args for w, args in steps), "torch is not installed pinned"

    users = [args for w, args in steps if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the container runs as root"
    assert "CMD" in words


def test_image_copies_only_what_exists():
    missing = []
    for w, args in dockerfile_instructions():
        if w == "COPY" and "--from" not in args:
            *sources, _ = exec_form(args)
            missing += [src for src in sources if not (ROOT / src).exists()]
    assert missing == [], f"COPY sources missing from the build context: {missing}"


def test_the_image_holds_every_package_and_the_ocr_engine():
    """Each package pyproject installs is copied into the image, and the image installs the
    Debian packages OCR reads scans with (its language packs included)."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    text = DOCKERFILE.read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    assert {p.rstrip("*") for p in include} <= copied
    from invoicechain.config import Settings

    for lang in set(Settings().ocr_languages.split("+")) - {"eng"}:  # eng comes with tesseract-ocr
        assert f"tesseract-ocr-{lang}" in text
        assert f"tesseract-ocr-{lang}" in (ROOT / "deploy" / "apt-packages.txt").read_text()
