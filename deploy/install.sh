#!/usr/bin/env bash
# Install (or remove) the inspector daemon as a systemd service on a line-side machine.
#
#   sudo deploy/install.sh              CPU machine: torch==2.13.0 CPU wheel, OpenVINO (default engine)
#   sudo deploy/install.sh --gpu        GPU machine: CUDA torch from PyPI + inspector[tensorrt]
#   sudo deploy/install.sh --start      ... and start the service now
#   deploy/install.sh --dry-run [...]   print what would be done, change nothing
#   sudo deploy/install.sh --uninstall  remove the unit and the venv; keep config and data
#
# Layout: /opt/inspector/venv (code), /etc/inspector/inspector.yaml (config, never
# overwritten), /var/lib/inspector (database, status), /var/cache/inspector (engine plans),
# /srv/inspector/{inbox,done,quarantine,heatmaps} (frames), unit in /etc/systemd/system.
set -euo pipefail

readonly TORCH_VERSION="2.13.0"
# A plant mirror of the PyTorch CPU wheels can be given with TORCH_INDEX_URL.
readonly TORCH_CPU_INDEX="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
readonly PREFIX="/opt/inspector"
readonly VENV="${PREFIX}/venv"
readonly CONF_DIR="/etc/inspector"
readonly CONF_FILE="${CONF_DIR}/inspector.yaml"
readonly UNIT_DIR="/etc/systemd/system"
readonly SYSUSERS_FILE="/etc/sysusers.d/inspector.conf"
readonly TMPFILES_FILE="/etc/tmpfiles.d/inspector.conf"
readonly UNIT="inspector.service"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE_DIR="$(dirname "${HERE}")"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
GPU=0
START=0
UNINSTALL=0

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    cat <<EOF

Options:
  --gpu           install the CUDA build of torch and the tensorrt extra
  --start         start (or restart) the service after installing
  --dry-run       print the commands instead of running them
  --uninstall     disable and remove the unit, the venv and the sysusers/tmpfiles snippets;
                  keep ${CONF_DIR}, /var/lib/inspector, /var/log/inspector, /srv/inspector
  --source DIR    install the package from DIR (default: ${SOURCE_DIR})
  -h, --help      this help
Environment: PYTHON (default python3, >= 3.10); PIP_INDEX_URL / PIP_EXTRA_INDEX_URL as for pip;
  TORCH_INDEX_URL (default ${TORCH_CPU_INDEX}) for the CPU torch wheel.
EOF
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

# Run a command, or print it (shell-quoted) under --dry-run.
run() {
    if (( DRY_RUN )); then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

while (( $# )); do
    case "$1" in
        --gpu) GPU=1 ;;
        --start) START=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --source)
            [[ $# -ge 2 ]] || die "--source needs a directory"
            SOURCE_DIR="$2"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

if (( ! DRY_RUN )) && [[ ${EUID} -ne 0 ]]; then
    die "run as root (sudo), or add --dry-run to see what would be done"
fi
if (( ! DRY_RUN )); then
    command -v systemctl >/dev/null || die "systemctl not found: this installs a systemd service"
fi

uninstall() {
    log "stopping and disabling ${UNIT}"
    if (( DRY_RUN )) || systemctl list-unit-files "${UNIT}" >/dev/null 2>&1; then
        run systemctl disable --now "${UNIT}" || true
    fi
    log "removing the unit, the venv and the sysusers/tmpfiles snippets"
    run rm -f "${UNIT_DIR}/${UNIT}" "${SYSUSERS_FILE}" "${TMPFILES_FILE}"
    run rm -rf "${VENV}"
    if (( DRY_RUN )) || [[ -d ${PREFIX} ]]; then
        run rmdir --ignore-fail-on-non-empty "${PREFIX}"
    fi
    run systemctl daemon-reload
    run systemctl reset-failed "${UNIT}" || true
    log "kept: ${CONF_DIR}, /var/lib/inspector, /var/cache/inspector, /var/log/inspector, /srv/inspector,"
    log "      drop-ins in ${UNIT_DIR}/${UNIT}.d and user 'inspector'"
    log "remove those by hand once their data is archived"
}

check_python() {
    "${PYTHON}" - <<'EOF' || die "${PYTHON} must be Python >= 3.10 with the venv module (apt-get install python3-venv)"
import sys, venv  # noqa: F401
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF
}

install_venv() {
    [[ -f ${SOURCE_DIR}/setup.cfg || -f ${SOURCE_DIR}/pyproject.toml ]] \
        || die "${SOURCE_DIR} is not the inspector source tree (no setup.cfg/pyproject.toml); use --source"
    if (( DRY_RUN )) || [[ ! -x ${VENV}/bin/python ]]; then
        log "creating the virtual environment ${VENV}"
        run install -d -m 0755 "${PREFIX}"
        run "${PYTHON}" -m venv "${VENV}"
    fi
    run "${VENV}/bin/python" -m pip install --upgrade --quiet pip
    if (( GPU )); then
        # PyPI's Linux wheels of torch are the CUDA builds.
        log "installing torch==${TORCH_VERSION} (CUDA build) and inspector[tensorrt]"
        run "${VENV}/bin/python" -m pip install "torch==${TORCH_VERSION}"
        run "${VENV}/bin/python" -m pip install "${SOURCE_DIR}[tensorrt]"
    else
        # Pin the CPU wheel first, so the package's `torch>=` requirement is already met and
        # pip does not pull the ~2 GB CUDA build onto a machine without a GPU.
        log "installing torch==${TORCH_VERSION} (CPU build) and inspector"
        run "${VENV}/bin/python" -m pip install --index-url "${TORCH_CPU_INDEX}" "torch==${TORCH_VERSION}"
        run "${VENV}/bin/python" -m pip install "${SOURCE_DIR}"
    fi
    if (( DRY_RUN )); then
        run "${VENV}/bin/inspector" --help
    else
        "${VENV}/bin/inspector" --help >/dev/null || die "the installed console script does not run"
    fi
}

install_system_files() {
    log "system user and folders (sysusers.d, tmpfiles.d)"
    run install -D -m 0644 "${HERE}/inspector.sysusers" "${SYSUSERS_FILE}"
    run install -D -m 0644 "${HERE}/inspector.tmpfiles" "${TMPFILES_FILE}"
    run systemd-sysusers "${SYSUSERS_FILE}"
    run systemd-tmpfiles --create "${TMPFILES_FILE}"
}

install_config() {
    if [[ -e ${CONF_FILE} ]]; then
        log "keeping the existing ${CONF_FILE}"
        return
    fi
    local example="${SOURCE_DIR}/config/inspector.example.yaml"
    if [[ ! -f ${example} ]]; then
        (( DRY_RUN )) || die "${example} not found"
        log "warning: ${example} not found (the real run stops here)"
    fi
    log "installing ${CONF_FILE} from ${example}; edit it before starting the service"
    run install -d -m 0755 "${CONF_DIR}"
    # root-owned and read-only to the daemon (it may hold a database password)
    run install -m 0640 -o root -g inspector "${example}" "${CONF_FILE}"
}

# The service can write only to /var/lib, /var/cache, /var/log/inspector and /srv/inspector
# (ProtectSystem=strict), and relative paths in the config resolve next to it, in /etc.
check_config() {
    if (( DRY_RUN )); then
        log "would check ${CONF_FILE} for paths the service cannot write"
        return
    fi
    "${VENV}/bin/python" - "${CONF_FILE}" <<'EOF' || log "warning: ${CONF_FILE} does not load yet; fix it before starting the service"
import sys
from inspector.settings import load_settings

s = load_settings(sys.argv[1])
writable = ("/var/lib/inspector", "/var/cache/inspector", "/var/log/inspector", "/srv/inspector")
paths = {"output.done_dir": s.output.done_dir, "output.quarantine_dir": s.output.quarantine_dir,
         "output.heatmap_dir": s.output.heatmap_dir}
for i, src in enumerate(s.sources):
    if getattr(src, "inbox", None) is not None:
        paths[f"sources.{i}.inbox"] = src.inbox
if s.database.url.startswith("sqlite:///"):
    paths["database.url"] = s.database.url[len("sqlite:///"):]
bad = [f"{k}={v}" for k, v in paths.items() if not str(v).startswith(writable)]
if bad:
    print("install.sh: warning: the service cannot write to " + ", ".join(bad)
          + "; use absolute paths under " + " or ".join(writable), file=sys.stderr)
EOF
}

install_unit() {
    log "installing ${UNIT_DIR}/${UNIT}"
    run install -D -m 0644 "${HERE}/${UNIT}" "${UNIT_DIR}/${UNIT}"
    if command -v systemd-analyze >/dev/null; then
        run systemd-analyze verify "${UNIT_DIR}/${UNIT}" || log "warning: systemd-analyze verify reported problems (above)"
    fi
    run systemctl daemon-reload
    run systemctl enable "${UNIT}"
    if (( START )); then
        run systemctl restart "${UNIT}"
        log "started; follow it with: journalctl -u ${UNIT} -f"
    else
        log "enabled, not started. Set the bundle and sources in ${CONF_FILE}, then: systemctl start ${UNIT}"
    fi
}

if (( UNINSTALL )); then
    uninstall
    exit 0
fi

check_python
install_system_files
install_venv
install_config
check_config
install_unit
(( DRY_RUN )) && log "dry run: nothing was changed"
exit 0
