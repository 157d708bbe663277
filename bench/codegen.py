"""Benchmark the DAG code generator: render cost, deploy latency, and Airflow parse cost.

Run as `.venv/bin/python bench/codegen.py` (or `make bench-codegen`). Prints a table with each
figure next to its target (PASS/MISS) and, last, one JSON line holding every number. Exits 0
when every target is met, 2 on a MISS, 1 when something is broken (an import error, a DAG
count that is off, a failed deployment, Airflow not starting).

1. render: `codegen.render_dag` (render + `check_source`) over varied specs, median and p95.
2. deploy: the portal's own deploy path (`deployment_request` + `deployment_run`) against a
   real local Airflow 3.3.2 on port 8095 with `refresh_interval=3`: request -> registered.
3. parse: 100 generated DAG files vs the same 100 pipelines as dag-factory YAML, DagBag parse
   time per DAG in a separate Airflow venv that has dag-factory (`.airflow/venv-bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.local import BUNDLE_REFRESH_CHECK_INTERVAL

if TYPE_CHECKING:
    from pipelines.authoring.spec import PipelineSpec
    from pipelines.models import Environment

from common import BenchError, Row, exit_code, median, p95, print_table, run, verdict

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / ".airflow" / "venv-bench"
BENCH_HOME = REPO / ".airflow" / "bench-home"
DAG_FACTORY = "dag-factory==1.1.0"
AIRFLOW_PORT = 8095
REFRESH_INTERVAL_S = 3
# [dag_processor] bundle_refresh_check_interval as orchestrator.local sets it: the dag-processor
# looks at refresh_interval only this often (Airflow's default, 5 s, makes a 3 s refresh act as 5).
BUNDLE_CHECK_DEFAULT_S = BUNDLE_REFRESH_CHECK_INTERVAL
RENDERS = 200
DEPLOYS = 5
PARSE_DAGS = 100
PARSE_PROCESSES = 3  # fresh processes per folder and mode, alternating between the folders
TARGET_DEPLOY_S = 5.0
TARGET_PARSE_RATIO = 3.0
SEED = 20261123

KINDS = ["integer", "bigint", "numeric", "float", "text", "boolean", "date", "timestamp"]
WORDS = ["order", "customer", "amount", "region", "status", "sku", "price", "note", "event"]
ZONES = ["UTC", "Europe/London", "America/New_York", "Asia/Tokyo"]
PYTHON_OPERATOR = "airflow.providers.standard.operators.python.PythonOperator"
TASKS = ("create_target", "load_partition", "check_partition")
# The keys each task callable reads from SPEC; dag-factory hands them over as op_kwargs.
TASK_SPEC_KEYS = (
    "timezone",
    "partition_grain",
    "partition_type",
    "allow_empty",
    "source_conn_id",
    "target_conn_id",
    "sql",
)
# dag-factory adds a "dagfactory" tag and appends the YAML to doc_md; nothing else may differ.
EXPECTED_DIFFERENCES = {"tags", "doc_md"}


# --- helpers ------------------------------------------------------------------------------------


def setup_django(data_dir: Path) -> None:
    """Point the portal at a scratch SQLite DB and an unconsumed on-disk broker, then set up."""
    sys.path.insert(0, str(REPO))
    for name in ("DATABASE_URL", "CELERY_TASK_ALWAYS_EAGER"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "1",
            "PORTAL_DATA_DIR": str(data_dir),
            # Deploys are run here synchronously; the on-commit enqueue lands in a folder no
            # worker reads.
            "CELERY_BROKER_URL": "filesystem://",
            "PORTAL_AIRFLOW_USERNAME": "portal",
            "PORTAL_AIRFLOW_PASSWORD": "portal",
            "DEPLOY_REGISTRATION_TIMEOUT_SECONDS": "60",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()


def bench_environment(slug: str, dialect: str, schema: str, prefix: str) -> Environment:
    """An unsaved Environment: all codegen needs of a render target."""
    from pipelines.models import Environment

    return Environment(
        slug=slug,
        name=slug.title(),
        airflow_url="http://127.0.0.1:1",
        dags_folder="/nonexistent",
        dag_id_prefix=prefix,
        warehouse_conn_id=f"warehouse_{slug}",
        warehouse_dialect=dialect,
        target_schema=schema,
    )


def make_specs(count: int, seed: int) -> list[PipelineSpec]:
    """Return `count` distinct, valid-shaped specs of varied size (3-30 columns, long texts)."""
    from pipelines.authoring.spec import Column, PipelineSpec

    rng = random.Random(seed)
    specs = []
    for i in range(count):
        hourly = rng.random() < 0.3
        partition = Column("loaded_at" if hourly else "business_date", "timestamp")
        if not hourly and rng.random() < 0.6:
            partition = Column("business_date", "date")
        columns = [Column("id", "bigint")]
        columns += [
            Column(f"{rng.choice(WORDS)}_{j}", rng.choice(KINDS)) for j in range(rng.randint(1, 28))
        ]
        columns.append(partition)
        dialect = rng.choice(["postgres", "sqlite"])
        description = " ".join(
            rng.choice(WORDS + ["“quoted”", "{{ ds }}", "it's", 'say "hi"', "→", "\\n"])
            for _ in range(rng.randint(0, 200))
        )
        specs.append(
            PipelineSpec(
                name=f"bench-{i:03d}-{rng.choice(WORDS)}",
                team="payments",
                team_domain="finance",
                owner="alice",
                source_database="shop",
                source_dialect=dialect,
                source_conn_id=f"{dialect}_source",
                source_schema="public" if dialect == "postgres" else "",
                source_table=f"{rng.choice(WORDS)}s_{i}",
                columns=tuple(columns),
                target_table=f"bench_{i:03d}",
                schedule=f"{rng.randint(0, 59)} * * * *"
                if hourly
                else f"{rng.randint(0, 59)} {rng.randint(0, 23)} * * *",
                timezone=rng.choice(ZONES),
                primary_key=tuple(c.name for c in columns[: rng.randint(1, 3)]),
                partition_column=partition.name,
                partition_grain="hour" if hourly else "day",
                sla_minutes=rng.choice([None, 60, 120, 1440]),
                retries=rng.randint(0, 5),
                retry_delay_minutes=rng.choice([1, 5, 15]),
                execution_timeout_minutes=rng.choice([30, 60, 180]),
                tags=tuple(rng.sample(["revenue", "daily", "pii", "core", "finance:close"], 2)),
                runbook_url=rng.choice(["", "https://wiki.example.com/runbooks/x"]),
                description=description,
                allow_empty=rng.random() < 0.2,
            )
        )
    return specs


# --- 1. render ----------------------------------------------------------------------------------


def bench_render() -> dict[str, Any]:
    """Time render_dag (which runs check_source) over RENDERS varied specs and three targets."""
    from pipelines.authoring import codegen

    targets = [
        bench_environment("dev", "sqlite", "", "dev__"),
        bench_environment("stage", "postgres", "analytics", "stage__"),
        bench_environment("prod", "postgres", "analytics", ""),
    ]
    specs = make_specs(RENDERS, SEED)
    url = "http://127.0.0.1:8000/pipelines/x/"
    codegen.render_dag(specs[0], targets[0], version=1, portal_url=url)  # template + skeleton
    render_ms, check_ms, sizes = [], [], []
    for i, spec in enumerate(specs):
        target = targets[i % len(targets)]
        started = time.perf_counter()
        rendered = codegen.render_dag(spec, target, version=i + 1, portal_url=url)
        render_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        codegen.check_source(rendered.source)
        check_ms.append((time.perf_counter() - started) * 1000)
        sizes.append(len(rendered.source))
    return {
        "renders": len(render_ms),
        "median_ms": round(median(render_ms), 3),
        "p95_ms": round(p95(render_ms), 3),
        "max_ms": round(max(render_ms), 3),
        "check_median_ms": round(median(check_ms), 3),
        "source_kb_median": round(median(sizes) / 1024, 1),
    }


# --- 2. deploy ----------------------------------------------------------------------------------


@contextmanager
def local_airflow(extra_env: dict[str, str]) -> Iterator[tuple[Any, float]]:
    """A fresh Airflow 3.3.2 in BENCH_HOME on AIRFLOW_PORT; always stopped on the way out."""
    from orchestrator.local import LocalAirflow, ensure_venv

    ensure_venv()
    airflow = LocalAirflow(
        home=BENCH_HOME,
        port=AIRFLOW_PORT,
        refresh_interval=REFRESH_INTERVAL_S,
        # Deploying unpauses the DAG and the scheduler would start the latest missed run at
        # once, taking CPU from the deploys measured next. Manual runs would still work.
        extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False", **extra_env},
    )
    airflow.stop()  # a leftover from an interrupted run
    shutil.rmtree(BENCH_HOME, ignore_errors=True)
    started = time.monotonic()
    try:
        airflow.start(timeout=180)
        yield airflow, time.monotonic() - started
    finally:
        airflow.stop()


def seed_catalog(airflow: Any) -> tuple[Any, Environment]:
    """Create the rows a deployment needs (as tests/conftest.py builds them); return user, env."""
    from django.contrib.auth import get_user_model

    from pipelines.models import (
        Environment,
        Membership,
        SourceColumn,
        SourceDatabase,
        SourceTable,
        Team,
    )

    team = Team.objects.create(slug="payments", name="Payments", domain="finance")
    user = get_user_model().objects.create_user("alice", "alice@example.com", "pw-alice")
    Membership.objects.create(team=team, user=user, role="editor")
    database = SourceDatabase.objects.create(name="shop", dialect="sqlite", conn_id="demo_source")
    table = SourceTable.objects.create(database=database, name="orders", schema="")
    columns = [
        ("order_id", "bigint"),
        ("customer_id", "bigint"),
        ("amount", "numeric"),
        ("order_date", "date"),
        ("updated_at", "timestamp"),
    ]
    for position, (name, kind) in enumerate(columns):
        SourceColumn.objects.create(table=table, name=name, kind=kind, position=position)
    environment = Environment.objects.create(
        slug="bench",
        name="Bench",
        order=0,
        airflow_url=airflow.url,
        dags_folder=str(airflow.dags_folder),
        dag_id_prefix="bench__",
        warehouse_conn_id="bench_warehouse",
        warehouse_dialect="sqlite",
        target_schema="",
    )
    return user, environment


def timed_deploy(version: Any, environment: Environment, user: Any) -> dict[str, float]:
    """Request and run one deployment synchronously; return its timings or raise BenchError."""
    from pipelines.deployments import services as deploy
    from pipelines.models import Deployment

    deployment = deploy.deployment_request(version=version, environment=environment, by=user)
    deploy.deployment_run_until_done(deployment_id=deployment.id)  # steps, as a worker would
    deployment.refresh_from_db()
    if deployment.state != Deployment.State.DEPLOYED:
        raise BenchError(
            f"Deployment of {deployment.dag_id} ended {deployment.state}: "
            f"{deployment.error or deployment.last_attempt_error}"
        )
    return {
        "total_s": deployment.deploy_seconds,
        "portal_s": (deployment.written_at - deployment.requested_at).total_seconds(),
        "airflow_s": (deployment.registered_at - deployment.written_at).total_seconds(),
    }


def bench_deploy(bundle_check_s: int | None = None) -> dict[str, Any]:
    """Deploy DEPLOYS new pipelines, then a version 2 of each, to a real local Airflow.

    Back-to-back requests would all land just after a folder scan (the previous deploy ended
    there) and so always wait a whole cycle; each new request therefore first waits 0, 1/5,
    2/5, ... of the scan cycle after the previous registration, like requests arriving at
    random moments would.
    """
    from pipelines.authoring import services
    from pipelines.authoring.forms import PipelineForm
    from pipelines.authoring.spec import PipelineSpec
    from pipelines.models import PipelineVersion

    extra_env = {}
    if bundle_check_s is not None:
        extra_env["AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL"] = str(bundle_check_s)
    check_s = BUNDLE_CHECK_DEFAULT_S if bundle_check_s is None else bundle_check_s
    cycle_s = max(check_s, REFRESH_INTERVAL_S)
    with local_airflow(extra_env) as (airflow, startup_s):
        user, environment = seed_catalog(airflow)
        new, again = [], []
        pipelines = []
        for i in range(DEPLOYS):
            form = PipelineForm(
                {
                    "name": f"orders-bench-{i}",
                    "team": "payments",
                    "owner": "alice",
                    "source": "shop.orders",
                    "target_table": f"orders_bench_{i}",
                    "schedule": f"{10 + i} 2 * * *",
                    "timezone": "UTC",
                    "primary_key": "order_id",
                    "partition_column": "order_date",
                    "partition_grain": "day",
                    "sla_minutes": 120,
                    "retries": 3,
                    "retry_delay_minutes": 5,
                    "execution_timeout_minutes": 60,
                    "tags": "revenue",
                    "description": "Daily orders into the warehouse.",
                },
                user=user,
            )
            if not form.is_valid():
                raise BenchError(f"The bench pipeline form is invalid: {form.errors.as_text()}")
            pipeline = services.pipeline_create(spec=form.spec, by=user)
            pipelines.append(pipeline)
            time.sleep(i * cycle_s / DEPLOYS)
            new.append(timed_deploy(pipeline.versions.get(number=1), environment, user))
        for pipeline in pipelines:
            # No edit service yet: a version 2 is made as tests/deployments/test_deploy.py does.
            v1 = pipeline.versions.get(number=1)
            spec2 = v1.spec_json | {"description": "Version 2 of the bench pipeline."}
            v2 = PipelineVersion.objects.create(
                pipeline=pipeline,
                number=2,
                spec_json=spec2,
                spec_sha256=PipelineSpec.from_json(spec2).sha256(),
                created_by=user,
            )
            again.append(timed_deploy(v2, environment, user))

    def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
        totals = [r["total_s"] for r in rows]
        return {
            "runs": len(rows),
            "median_s": round(median(totals), 2),
            "min_s": round(min(totals), 2),
            "max_s": round(max(totals), 2),
            "portal_median_s": round(median([r["portal_s"] for r in rows]), 2),
            "airflow_median_s": round(median([r["airflow_s"] for r in rows]), 2),
            "all_s": [round(t, 2) for t in totals],
        }

    return {
        "airflow_config": {
            "refresh_interval_s": REFRESH_INTERVAL_S,
            "bundle_refresh_check_interval_s": check_s,
        },
        "airflow_startup_s": round(startup_s, 1),
        "new": summary(new),
        "redeploy": summary(again),
    }


# --- 3. parse -----------------------------------------------------------------------------------

# Runs in the bench venv. The dag-processor's BundleDagBag puts the bundle folder on sys.path;
# plain DagBag does not, so do it here (dag-factory's callables module lives there).
_PARSE_SCRIPT = r"""
import json, sys, time
folder, out = sys.argv[1], sys.argv[2]
sys.path.append(folder)
from airflow.dag_processing.dagbag import DagBag

started = time.perf_counter()
bag = DagBag(folder)  # safe_mode from config (True), as the dag-processor parses
seconds = time.perf_counter() - started

def td(value):
    return None if value is None else value.total_seconds()

def fingerprint(dag):
    first = dag.task_dict["create_target"] if "create_target" in dag.task_dict else None
    return {
        "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
        "operators": sorted({type(t).__name__ for t in dag.tasks}),
        "timetable": repr(dag.timetable),
        "start_date": dag.start_date.isoformat(),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "description": dag.description,
        "doc_md": dag.doc_md,
        "tags": sorted(dag.tags),
        "task_args": first and {
            "owner": first.owner,
            "retries": first.retries,
            "retry_delay": td(first.retry_delay),
            "retry_exponential_backoff": float(first.retry_exponential_backoff),
            "max_retry_delay": td(first.max_retry_delay),
            "execution_timeout": td(first.execution_timeout),
        },
    }

with open(out, "w") as fh:
    json.dump({
        "seconds": seconds,
        "import_errors": dict(bag.import_errors),
        "warnings": {k: [str(w) for w in v] for k, v in bag.captured_warnings.items()},
        "dags": {dag_id: fingerprint(dag) for dag_id, dag in bag.dags.items()},
    }, fh, default=str)
"""

_LOADER = '''"""Airflow DAG loader for dag-factory: builds one DAG per YAML file in this folder."""

from pathlib import Path

from dagfactory import load_yaml_dags

load_yaml_dags(globals_dict=globals(), dags_folder=str(Path(__file__).parent))
'''

_CALLABLES = '''"""Task callables the dag-factory YAML names; stand-ins, only parsing is timed."""


def create_target(spec):
    raise NotImplementedError(spec["sql"]["create_target"])


def load_partition(spec, **context):
    raise NotImplementedError(spec["sql"]["select_source"])


def check_partition(spec, **context):
    raise NotImplementedError(spec["sql"]["count_target"])
'''


def dag_factory_config(literal: dict[str, Any]) -> dict[str, Any]:
    """Return the dag-factory YAML document for the DAG whose SPEC literal is `literal`."""

    def seconds(value: int) -> dict[str, Any]:
        return {"__type__": "datetime.timedelta", "seconds": value}

    task_spec = {key: literal[key] for key in TASK_SPEC_KEYS}  # one object: YAML anchors it
    tasks: dict[str, Any] = {}
    for previous, task in zip((None, *TASKS), TASKS, strict=False):
        tasks[task] = {
            "operator": PYTHON_OPERATOR,
            "python_callable": f"portal_bench_tasks.{task}",
            "op_kwargs": {"spec": task_spec},
        }
        if previous:
            tasks[task]["dependencies"] = [previous]
    return {
        literal["dag_id"]: {
            "description": literal["description"],
            "doc_md": literal["doc_md"] + "\n",
            "tags": literal["tags"],
            "timezone": literal["timezone"],  # read by dag-factory for start_date
            "start_date": literal["start_date"],
            "schedule": {
                "__type__": "airflow.sdk.CronDataIntervalTimetable",
                "__args__": [literal["schedule"]],
                "timezone": literal["timezone"],
            },
            "catchup": False,
            "max_active_runs": literal["max_active_runs"],
            "default_args": {
                "owner": literal["owner"],
                "retries": literal["retries"],
                "retry_delay": seconds(literal["retry_delay_s"]),
                "retry_exponential_backoff": 2.0,
                "max_retry_delay": seconds(literal["max_retry_delay_s"]),
                "execution_timeout": seconds(literal["execution_timeout_s"]),
            },
            "tasks": tasks,
        }
    }


def write_parse_folders(root: Path) -> tuple[Path, Path]:
    """Write PARSE_DAGS generated DAG files and the same DAGs as dag-factory YAML."""
    import yaml

    from pipelines.authoring import codegen

    generated, factory = root / "generated", root / "dag-factory"
    generated.mkdir()
    factory.mkdir()
    target = bench_environment("bench", "sqlite", "", "bench__")
    for spec in make_specs(PARSE_DAGS, SEED + 1):
        url = f"http://127.0.0.1:8000/pipelines/{spec.name}/"
        rendered = codegen.render_dag(spec, target, version=1, portal_url=url)
        (generated / f"{rendered.dag_id}.py").write_text(rendered.source)
        literal = codegen.check_source(rendered.source)
        document = dag_factory_config(literal)
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
        (factory / f"{rendered.dag_id}.yml").write_text(text)
    (factory / "load_dags.py").write_text(_LOADER)
    (factory / "portal_bench_tasks.py").write_text(_CALLABLES)
    (factory / ".airflowignore").write_text("portal_bench_tasks.py\n")
    return generated, factory


def parse_once(folder: Path, scratch: Path, *, pyc: bool) -> dict[str, Any]:
    """Parse `folder` with DagBag in a fresh bench-venv process (scratch AIRFLOW_HOME).

    pyc=False: no bytecode is read or written, every file is compiled (a new or changed file).
    pyc=True: the folder's __pycache__ is used and filled (a re-parse of an unchanged file).
    """
    dropped = ("AIRFLOW_", "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    if not pyc:
        shutil.rmtree(folder / "__pycache__", ignore_errors=True)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(
        {
            "PATH": os.pathsep.join([str(BENCH_VENV / "bin"), env.get("PATH", os.defpath)]),
            "AIRFLOW_HOME": str(scratch / "home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
            # dag-factory's usage telemetry (only on runs, but never from a benchmark).
            "AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY": "False",
            "DO_NOT_TRACK": "1",
        }
    )
    out = scratch / "parse.json"
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [
            str(BENCH_VENV / "bin" / "python"),
            "-c",
            _PARSE_SCRIPT,
            str(folder),
            str(out),
        ],
        env=env,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        raise BenchError(f"Parsing {folder} failed to run:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def check_bag(name: str, result: dict[str, Any]) -> None:
    """Fail loudly unless the folder gave PARSE_DAGS DAGs, no import errors, three tasks each."""
    errors = result["import_errors"]
    if errors:
        first = next(iter(errors.items()))
        raise BenchError(f"{name}: {len(errors)} import errors, first {first[0]}:\n{first[1]}")
    if len(result["dags"]) != PARSE_DAGS:
        raise BenchError(f"{name}: {len(result['dags'])} DAGs parsed, expected {PARSE_DAGS}")
    chain = {"create_target": ["load_partition"], "load_partition": ["check_partition"]}
    chain["check_partition"] = []
    wrong = [d for d, fp in result["dags"].items() if fp["tasks"] != chain]
    if wrong:
        raise BenchError(f"{name}: {wrong[0]} does not have the three chained tasks")


def compare_bags(generated: dict[str, Any], factory: dict[str, Any]) -> list[str]:
    """Return the fingerprint keys that differ between the two folders' DAGs (same ids)."""
    if set(generated["dags"]) != set(factory["dags"]):
        raise BenchError("The two folders do not hold the same DAG ids.")
    differing = set()
    for dag_id, mine in generated["dags"].items():
        theirs = factory["dags"][dag_id]
        differing |= {key for key in mine if mine[key] != theirs.get(key)}
    unexpected = differing - EXPECTED_DIFFERENCES
    if unexpected:
        dag_id = next(iter(generated["dags"]))
        detail = {k: (generated["dags"][dag_id][k], factory["dags"][dag_id][k]) for k in unexpected}
        raise BenchError(f"generated and dag-factory DAGs differ in {sorted(unexpected)}: {detail}")
    return sorted(differing)


def bench_parse() -> dict[str, Any]:
    """Parse both folders in alternating fresh processes, without and with bytecode caches."""
    from orchestrator.local import ensure_venv

    ensure_venv(venv=BENCH_VENV, extra=[DAG_FACTORY])
    modes = ("compile", "pyc")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {mode: [] for mode in modes} for name in ("generated", "dag_factory")
    }
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        folders = dict(zip(runs, write_parse_folders(Path(tmp)), strict=True))
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        for mode in modes:
            if mode == "pyc":  # one untimed parse writes each folder's __pycache__
                for folder in folders.values():
                    parse_once(folder, scratch, pyc=True)
            for _ in range(PARSE_PROCESSES):
                for name, folder in folders.items():
                    runs[name][mode].append(parse_once(folder, scratch, pyc=mode == "pyc"))
        for name, by_mode in runs.items():
            for result in by_mode["compile"] + by_mode["pyc"]:
                check_bag(name, result)
        differing = compare_bags(runs["generated"]["compile"][0], runs["dag_factory"]["compile"][0])
        kb = {
            name: median([p.stat().st_size / 1024 for p in folders[name].glob(pattern)])
            for name, pattern in (("generated", "*.py"), ("dag_factory", "*.yml"))
        }

    figures: dict[str, Any] = {"dags": PARSE_DAGS, "processes": PARSE_PROCESSES}
    for name, by_mode in runs.items():
        figures[name] = {
            f"{mode}_ms_per_dag": round(
                median([r["seconds"] for r in by_mode[mode]]) * 1000 / PARSE_DAGS, 2
            )
            for mode in modes
        }
        figures[name]["warnings"] = sum(len(v) for v in by_mode["compile"][0]["warnings"].values())
        figures[name]["file_kb_median"] = round(kb[name], 1)
    for mode in modes:
        key = f"{mode}_ms_per_dag"
        figures[f"ratio_{mode}"] = round(figures["dag_factory"][key] / figures["generated"][key], 2)
    figures["differences"] = differing
    return figures


# --- report -------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> list[Row]:
    render, deploy, parse = results["render"], results["deploy"], results["parse"]
    new, again = deploy["new"], deploy["redeploy"]
    config = deploy["airflow_config"]
    gen, fac = parse["generated"], parse["dag_factory"]
    return [
        Row(
            f"render+check per DAG ({render['renders']} varied specs)",
            f"median {render['median_ms']:.2f} ms, p95 {render['p95_ms']:.2f} ms "
            f"(check_source alone {render['check_median_ms']:.2f} ms)",
        ),
        Row(
            f"deploy new DAG: request -> registered ({new['runs']}x)",
            f"median {new['median_s']:.2f} s (min {new['min_s']:.2f}, max {new['max_s']:.2f}; "
            f"portal {new['portal_median_s']:.2f} + Airflow {new['airflow_median_s']:.2f})",
            f"<= {TARGET_DEPLOY_S:.0f} s",
            verdict(new["median_s"] <= TARGET_DEPLOY_S),
        ),
        Row(
            f"re-deploy version 2 of a known DAG ({again['runs']}x)",
            f"median {again['median_s']:.2f} s (min {again['min_s']:.2f}, "
            f"max {again['max_s']:.2f})",
        ),
        Row(
            "local Airflow: start (fresh home); dag-processor settings",
            f"{deploy['airflow_startup_s']} s; refresh_interval {config['refresh_interval_s']} s, "
            f"bundle_refresh_check_interval {config['bundle_refresh_check_interval_s']} s",
        ),
        Row(
            f"DagBag parse, generated ({parse['dags']} .py files)",
            f"{gen['compile_ms_per_dag']:.2f} ms/DAG compiling, "
            f"{gen['pyc_ms_per_dag']:.2f} with .pyc",
        ),
        Row(
            f"DagBag parse, dag-factory ({parse['dags']} YAML + 1 loader)",
            f"{fac['compile_ms_per_dag']:.2f} ms/DAG compiling, "
            f"{fac['pyc_ms_per_dag']:.2f} with .pyc",
        ),
        Row(
            "parse cost ratio dag-factory / generated",
            f"{parse['ratio_compile']:.1f}x compiling, {parse['ratio_pyc']:.1f}x with .pyc",
            f">= {TARGET_PARSE_RATIO:.0f}x (compiling)",
            verdict(parse["ratio_compile"] >= TARGET_PARSE_RATIO),
        ),
    ]


def timed(step: str, func: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    print(f"... {step}", file=sys.stderr, flush=True)
    started = time.monotonic()
    result = func()
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle-check-interval",
        type=int,
        metavar="S",
        help="set Airflow's [dag_processor] bundle_refresh_check_interval for the deploy figure "
        f"(default: {BUNDLE_CHECK_DEFAULT_S} s, as orchestrator.local sets it; Airflow's own is 5)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-portal-") as data_dir:
        setup_django(Path(data_dir))
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        results: dict[str, Any] = {"date": date.today().isoformat()}  # noqa: DTZ011
        results["render"] = timed("render + check", bench_render)
        results["parse"] = timed("parse: generated vs dag-factory", bench_parse)
        results["deploy"] = timed(
            f"deploy to a local Airflow on :{AIRFLOW_PORT}",
            lambda: bench_deploy(args.bundle_check_interval),
        )
    rows = report(results)
    results["targets"] = {
        "deploy_new_median_s": {
            "target": TARGET_DEPLOY_S,
            "pass": results["deploy"]["new"]["median_s"] <= TARGET_DEPLOY_S,
        },
        "parse_ratio_compile": {
            "target": TARGET_PARSE_RATIO,
            "pass": results["parse"]["ratio_compile"] >= TARGET_PARSE_RATIO,
        },
    }
    results["wall_s"] = round(time.monotonic() - started, 1)
    print_table(rows)
    differences = ", ".join(results["parse"]["differences"])
    print(f"(the two folders' DAGs differ only in: {differences})")
    print(json.dumps(results, sort_keys=False))
    return exit_code(rows)


if __name__ == "__main__":
    run(main)
