"""Check a Kubernetes pod spec against the Pod Security Standards.

Source: the Kubernetes documentation page "Pod Security Standards"
(content/en/docs/concepts/security/pod-security-standards.md), in the text
published for Kubernetes v1.34 and later, unchanged up to the copy last
modified in August 2026 (the docs site then listed v1.33 to v1.37). That text
introduced the "Host Probes / Lifecycle Hooks (v1.34+)" control and is
otherwise the text the page has had since v1.31 ("container_engine_t (since
Kubernetes 1.31)"). Every control of its Baseline and Restricted tables is
encoded below, with the page's field paths and allowed values, at the "latest"
version (entries marked "since Kubernetes 1.2x/1.3x" are all included).

Two further rules come from sections of the page that point elsewhere:

* "OS-specific policy controls" (page): the Restricted controls Privilege
  Escalation, Seccomp and Capabilities are only required if `spec.os.name`
  is not `windows`.
* "User namespaces" (page) links to the "User Namespaces" page, section
  "Integration with Pod security admission checks", which says that for a pod
  that uses user namespaces (`spec.hostUsers: false`):
    - runAsNonRoot and runAsUser (pod, containers, initContainers,
      ephemeralContainers) are not checked, under Baseline or Restricted;
    - under Baseline, procMount (containers, initContainers,
      ephemeralContainers) is "similarly relaxed";
    - under Restricted, "a pod still must only use the default or empty
      ProcMount".
  The Pod Security Standards table itself still lists only "Undefined/nil,
  Default" for /proc Mount Type, with no mention of hostUsers. In the Pod
  Security Admission code this relaxation applies unconditionally from policy
  version v1.35 (check_procMount_baseline.go: procMount_1_35_baseline; before
  v1.35 it sat behind the alpha UserNamespacesPodSecurityStandards feature
  gate, since removed). It is encoded here: the check targets "latest".

Messages have the form "<level>: <control>: <what>: <path>", where <level> is
the level the control belongs to (a Baseline control found while checking at
"restricted" still says "baseline"), <control> is one of CONTROLS[<level>],
and <path> names the offending field, e.g.
"restricted: Privilege Escalation: allowPrivilegeEscalation != false:
spec.initContainers[0](dind).securityContext.allowPrivilegeEscalation".

Only the standard library is used.
"""

import copy
import sys

BASELINE = "baseline"
RESTRICTED = "restricted"

# Control names as the page's tables give them ("latest" version), without
# their version suffixes ("Host Probes / Lifecycle Hooks (v1.34+)",
# "Privilege Escalation (v1.8+)", "Running as Non-root user (v1.23+)",
# "Seccomp (v1.19+)", "Capabilities (v1.22+)").
# "restricted" includes every baseline control as well; its list here names
# only the controls it adds.
CONTROLS: dict[str, list[str]] = {
    BASELINE: [
        "HostProcess",
        "Host Namespaces",
        "Privileged Containers",
        "Capabilities",
        "HostPath Volumes",
        "Host Ports",
        "Host Probes / Lifecycle Hooks",
        "AppArmor",
        "SELinux",
        "/proc Mount Type",
        "Seccomp",
        "Sysctls",
    ],
    RESTRICTED: [
        "Volume Types",
        "Privilege Escalation",
        "Running as Non-root",
        "Running as Non-root user",
        "Seccomp",
        "Capabilities",
        # Not a row of the Restricted table: the User Namespaces page's rule
        # that Restricted keeps requiring Default/empty procMount for pods with
        # hostUsers: false, for which the Baseline /proc check is relaxed.
        "/proc Mount Type (user-namespace pods)",
    ],
}

CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")

# Baseline / Capabilities: capabilities.add may only hold these.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
    "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
    "SYS_CHROOT",
}

# Baseline / AppArmor.
APPARMOR_TYPES = {"RuntimeDefault", "Localhost"}
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"

# Baseline / SELinux: seLinuxOptions.type ("" and unset are allowed too).
SELINUX_TYPES = {
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",  # since Kubernetes 1.31
}

# Baseline / Seccomp and Restricted / Seccomp.
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}

# Baseline / Sysctls: spec.securityContext.sysctls[*].name.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",  # since Kubernetes 1.27
    "net.ipv4.tcp_keepalive_time",  # since Kubernetes 1.29
    "net.ipv4.tcp_fin_timeout",  # since Kubernetes 1.29
    "net.ipv4.tcp_keepalive_intvl",  # since Kubernetes 1.29
    "net.ipv4.tcp_keepalive_probes",  # since Kubernetes 1.29
}

# Restricted / Volume Types: every volume must set one of these to non-null.
RESTRICTED_VOLUME_TYPES = (
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
)

# Restricted / Capabilities.
RESTRICTED_ADDABLE_CAPABILITIES = {"NET_BIND_SERVICE"}

# Baseline / Host Probes / Lifecycle Hooks (v1.34+).
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HANDLERS = ("postStart", "preStop")
HOST_HANDLER_KINDS = ("httpGet", "tcpSocket")


# --------------------------------------------------------------------------
# small helpers


def _get(obj, *keys):
    """obj[k1][k2]..., or None as soon as something along the way is missing."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _msg(level: str, control: str, what: str, path: str) -> str:
    return f"{level}: {control}: {what}: {path}"


def _containers(pod: dict, selected):
    """(path prefix, container) for every container of every kind, in the
    order containers, initContainers, ephemeralContainers; only the selected
    names when `selected` is not None."""
    for kind in CONTAINER_KINDS:
        for i, container in enumerate(_list(pod.get(kind))):
            if not isinstance(container, dict):
                continue
            name = container.get("name")
            if selected is not None and name not in selected:
                continue
            yield f"spec.{kind}[{i}]({name})", container


def _container_sc(container: dict) -> dict:
    sc = container.get("securityContext")
    return sc if isinstance(sc, dict) else {}


def _pod_sc(pod: dict) -> dict:
    sc = pod.get("securityContext")
    return sc if isinstance(sc, dict) else {}


def _is_windows(pod: dict) -> bool:
    return _get(pod, "os", "name") == "windows"


def _in_user_namespace(pod: dict) -> bool:
    """spec.hostUsers explicitly false: the pod uses a user namespace."""
    return pod.get("hostUsers") is False


# --------------------------------------------------------------------------
# Baseline controls


def check_host_process(pod, selected, annotations):
    control = "HostProcess"
    out = []
    if _get(_pod_sc(pod), "windowsOptions", "hostProcess") not in (None, False):
        out.append(_msg(BASELINE, control, "hostProcess != false",
                        "spec.securityContext.windowsOptions.hostProcess"))
    for prefix, c in _containers(pod, selected):
        if _get(_container_sc(c), "windowsOptions", "hostProcess") not in (None, False):
            out.append(_msg(BASELINE, control, "hostProcess != false",
                            f"{prefix}.securityContext.windowsOptions.hostProcess"))
    return out


def check_host_namespaces(pod, selected, annotations):
    control = "Host Namespaces"
    out = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field) not in (None, False):
            out.append(_msg(BASELINE, control, f"{field} != false", f"spec.{field}"))
    return out


def check_privileged(pod, selected, annotations):
    control = "Privileged Containers"
    out = []
    for prefix, c in _containers(pod, selected):
        if _container_sc(c).get("privileged") not in (None, False):
            out.append(_msg(BASELINE, control, "privileged != false",
                            f"{prefix}.securityContext.privileged"))
    return out


def check_baseline_capabilities(pod, selected, annotations):
    control = "Capabilities"
    out = []
    for prefix, c in _containers(pod, selected):
        added = _list(_get(_container_sc(c), "capabilities", "add"))
        for j, cap in enumerate(added):
            if cap not in BASELINE_CAPABILITIES:
                out.append(_msg(BASELINE, control, f"{cap} not in the baseline set",
                                f"{prefix}.securityContext.capabilities.add[{j}]"))
    return out


def check_host_path_volumes(pod, selected, annotations):
    control = "HostPath Volumes"
    out = []
    for i, volume in enumerate(_list(pod.get("volumes"))):
        if isinstance(volume, dict) and volume.get("hostPath") is not None:
            out.append(_msg(BASELINE, control, "hostPath volume",
                            f"spec.volumes[{i}]({volume.get('name')}).hostPath"))
    return out


def check_host_ports(pod, selected, annotations):
    control = "Host Ports"
    out = []
    for prefix, c in _containers(pod, selected):
        for j, port in enumerate(_list(c.get("ports"))):
            if isinstance(port, dict) and port.get("hostPort") not in (None, 0):
                out.append(_msg(BASELINE, control, f"hostPort {port.get('hostPort')} != 0",
                                f"{prefix}.ports[{j}].hostPort"))
    return out


def check_host_probes(pod, selected, annotations):
    control = "Host Probes / Lifecycle Hooks"
    out = []
    for prefix, c in _containers(pod, selected):
        handlers = [(probe, c.get(probe)) for probe in PROBES]
        handlers += [(f"lifecycle.{hook}", _get(c, "lifecycle", hook))
                     for hook in LIFECYCLE_HANDLERS]
        for where, handler in handlers:
            for kind in HOST_HANDLER_KINDS:
                if _get(handler, kind, "host") not in (None, ""):
                    out.append(_msg(BASELINE, control, "host set",
                                    f"{prefix}.{where}.{kind}.host"))
    return out


def _apparmor_annotation_allowed(value) -> bool:
    return value in (None, "", "runtime/default") or (
        isinstance(value, str) and value.startswith("localhost/"))


def _profile_type_problems(pod, selected, field: str, allowed, control: str) -> list[str]:
    """Baseline's rule for a profile (`appArmorProfile`, `seccompProfile`): its type, where set
    at pod or container level, is one of `allowed`."""
    out = []
    pod_type = _get(_pod_sc(pod), field, "type")
    if pod_type is not None and pod_type not in allowed:
        out.append(_msg(BASELINE, control, f"{field}.type {pod_type}",
                        f"spec.securityContext.{field}.type"))
    for prefix, c in _containers(pod, selected):
        c_type = _get(_container_sc(c), field, "type")
        if c_type is not None and c_type not in allowed:
            out.append(_msg(BASELINE, control, f"{field}.type {c_type}",
                            f"{prefix}.securityContext.{field}.type"))
    return out


def check_apparmor(pod, selected, annotations):
    control = "AppArmor"
    out = _profile_type_problems(pod, selected, "appArmorProfile", APPARMOR_TYPES, control)
    # The legacy annotation names one container; the container filter applies.
    for key, value in (annotations or {}).items():
        if not key.startswith(APPARMOR_ANNOTATION_PREFIX):
            continue
        container_name = key[len(APPARMOR_ANNOTATION_PREFIX):]
        if selected is not None and container_name not in selected:
            continue
        if not _apparmor_annotation_allowed(value):
            out.append(_msg(BASELINE, control, f"annotation value {value}",
                            f"metadata.annotations[{key}]"))
    return out


def _selinux_problems(options, path: str) -> list[str]:
    control = "SELinux"
    out = []
    if not isinstance(options, dict):
        return out
    se_type = options.get("type")
    if se_type not in (None, "") and se_type not in SELINUX_TYPES:
        out.append(_msg(BASELINE, control, f"type {se_type} not allowed", f"{path}.type"))
    for field in ("user", "role"):
        if options.get(field) not in (None, ""):
            out.append(_msg(BASELINE, control, f"{field} set", f"{path}.{field}"))
    return out


def check_selinux(pod, selected, annotations):
    out = _selinux_problems(_pod_sc(pod).get("seLinuxOptions"),
                            "spec.securityContext.seLinuxOptions")
    for prefix, c in _containers(pod, selected):
        out += _selinux_problems(_container_sc(c).get("seLinuxOptions"),
                                 f"{prefix}.securityContext.seLinuxOptions")
    return out


def _proc_mount_problems(pod, selected, level: str, control: str) -> list[str]:
    out = []
    for prefix, c in _containers(pod, selected):
        proc_mount = _container_sc(c).get("procMount")
        if proc_mount not in (None, "Default"):
            out.append(_msg(level, control, f"procMount {proc_mount} != Default",
                            f"{prefix}.securityContext.procMount"))
    return out


def check_proc_mount(pod, selected, annotations):
    # Relaxed under Baseline for pods with hostUsers: false (User Namespaces
    # page; Pod Security Admission policy v1.35+).
    if _in_user_namespace(pod):
        return []
    return _proc_mount_problems(pod, selected, BASELINE, "/proc Mount Type")


def check_baseline_seccomp(pod, selected, annotations):
    return _profile_type_problems(pod, selected, "seccompProfile", SECCOMP_TYPES, "Seccomp")


def check_sysctls(pod, selected, annotations):
    control = "Sysctls"
    out = []
    for i, sysctl in enumerate(_list(_pod_sc(pod).get("sysctls"))):
        name = sysctl.get("name") if isinstance(sysctl, dict) else None
        if name not in SAFE_SYSCTLS:
            out.append(_msg(BASELINE, control, f"{name} not in the safe set",
                            f"spec.securityContext.sysctls[{i}].name"))
    return out


BASELINE_CHECKS = (
    check_host_process,
    check_host_namespaces,
    check_privileged,
    check_baseline_capabilities,
    check_host_path_volumes,
    check_host_ports,
    check_host_probes,
    check_apparmor,
    check_selinux,
    check_proc_mount,
    check_baseline_seccomp,
    check_sysctls,
)


# --------------------------------------------------------------------------
# Restricted controls


def check_volume_types(pod, selected, annotations):
    control = "Volume Types"
    out = []
    for i, volume in enumerate(_list(pod.get("volumes"))):
        if not isinstance(volume, dict):
            continue
        if any(volume.get(t) is not None for t in RESTRICTED_VOLUME_TYPES):
            continue
        kinds = sorted(k for k, v in volume.items() if k != "name" and v is not None)
        what = f"type {'/'.join(kinds) or '(none)'} not allowed"
        out.append(_msg(RESTRICTED, control, what, f"spec.volumes[{i}]({volume.get('name')})"))
    return out


def check_privilege_escalation(pod, selected, annotations):
    control = "Privilege Escalation"
    if _is_windows(pod):
        return []
    out = []
    for prefix, c in _containers(pod, selected):
        if _container_sc(c).get("allowPrivilegeEscalation") is not False:
            out.append(_msg(RESTRICTED, control, "allowPrivilegeEscalation != false",
                            f"{prefix}.securityContext.allowPrivilegeEscalation"))
    return out


def check_run_as_non_root(pod, selected, annotations):
    control = "Running as Non-root"
    if _in_user_namespace(pod):
        return []
    out = []
    pod_value = _pod_sc(pod).get("runAsNonRoot")
    if pod_value is not None and pod_value is not True:
        out.append(_msg(RESTRICTED, control, "runAsNonRoot != true",
                        "spec.securityContext.runAsNonRoot"))
    for prefix, c in _containers(pod, selected):
        value = _container_sc(c).get("runAsNonRoot")
        if value is None:
            if pod_value is not True:
                out.append(_msg(RESTRICTED, control,
                                "runAsNonRoot unset and not true at pod level",
                                f"{prefix}.securityContext.runAsNonRoot"))
        elif value is not True:
            out.append(_msg(RESTRICTED, control, "runAsNonRoot != true",
                            f"{prefix}.securityContext.runAsNonRoot"))
    return out


def check_run_as_user(pod, selected, annotations):
    control = "Running as Non-root user"
    if _in_user_namespace(pod):
        return []
    out = []
    if _pod_sc(pod).get("runAsUser") == 0:
        out.append(_msg(RESTRICTED, control, "runAsUser = 0",
                        "spec.securityContext.runAsUser"))
    for prefix, c in _containers(pod, selected):
        if _container_sc(c).get("runAsUser") == 0:
            out.append(_msg(RESTRICTED, control, "runAsUser = 0",
                            f"{prefix}.securityContext.runAsUser"))
    return out


def check_restricted_seccomp(pod, selected, annotations):
    control = "Seccomp"
    if _is_windows(pod):
        return []
    out = []
    pod_type = _get(_pod_sc(pod), "seccompProfile", "type")
    pod_ok = pod_type in SECCOMP_TYPES
    if pod_type is not None and not pod_ok:
        out.append(_msg(RESTRICTED, control,
                        f"seccompProfile.type {pod_type} not RuntimeDefault/Localhost",
                        "spec.securityContext.seccompProfile.type"))
    for prefix, c in _containers(pod, selected):
        c_type = _get(_container_sc(c), "seccompProfile", "type")
        path = f"{prefix}.securityContext.seccompProfile.type"
        if c_type is None:
            if not pod_ok:
                out.append(_msg(RESTRICTED, control,
                                "seccompProfile.type unset and pod level not RuntimeDefault/Localhost",
                                path))
        elif c_type not in SECCOMP_TYPES:
            out.append(_msg(RESTRICTED, control,
                            f"seccompProfile.type {c_type} not RuntimeDefault/Localhost", path))
    return out


def check_restricted_capabilities(pod, selected, annotations):
    control = "Capabilities"
    if _is_windows(pod):
        return []
    out = []
    for prefix, c in _containers(pod, selected):
        caps = _get(_container_sc(c), "capabilities")
        if "ALL" not in _list(_get(caps, "drop")):
            out.append(_msg(RESTRICTED, control, "capabilities.drop lacks ALL",
                            f"{prefix}.securityContext.capabilities.drop"))
        for j, cap in enumerate(_list(_get(caps, "add"))):
            if cap not in RESTRICTED_ADDABLE_CAPABILITIES:
                out.append(_msg(RESTRICTED, control, f"{cap} added (only NET_BIND_SERVICE may be)",
                                f"{prefix}.securityContext.capabilities.add[{j}]"))
    return out


def check_restricted_proc_mount(pod, selected, annotations):
    # Restricted keeps requiring Default/empty procMount for user-namespace
    # pods. For other pods the Baseline check already reports it.
    if not _in_user_namespace(pod):
        return []
    return _proc_mount_problems(pod, selected, RESTRICTED,
                                "/proc Mount Type (user-namespace pods)")


RESTRICTED_CHECKS = (
    check_volume_types,
    check_privilege_escalation,
    check_run_as_non_root,
    check_run_as_user,
    check_restricted_seccomp,
    check_restricted_capabilities,
    check_restricted_proc_mount,
)


# --------------------------------------------------------------------------


def violations(pod_spec: dict, level: str, containers: set[str] | None = None,
               annotations: dict | None = None) -> list[str]:
    """Violations of the Pod Security Standard `level` ("baseline" or
    "restricted"; restricted includes baseline) by `pod_spec`, a PodSpec as in
    a Deployment's spec.template.spec, with `annotations` the pod template's
    annotations. With `containers`, container-level checks only look at the
    containers of those names; pod-level checks are always made."""
    if level not in (BASELINE, RESTRICTED):
        raise ValueError(f"unknown Pod Security Standards level {level!r}")
    pod = pod_spec if isinstance(pod_spec, dict) else {}
    checks = BASELINE_CHECKS + (RESTRICTED_CHECKS if level == RESTRICTED else ())
    out: list[str] = []
    for check in checks:
        out += check(pod, containers, annotations)
    return out


# --------------------------------------------------------------------------
# self-test


def _secure_container(name: str) -> dict:
    return {
        "name": name,
        "image": "example/image:1",
        "ports": [{"containerPort": 8080}],
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            "readOnlyRootFilesystem": True,
        },
    }


def _compliant_pod() -> dict:
    """A pod that meets Restricted (and so Baseline)."""
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
        "initContainers": [_secure_container("init")],
        "containers": [_secure_container("app")],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "cfg"}},
            {"name": "token", "projected": {"sources": []}},
        ],
    }


def _app(pod: dict) -> dict:
    return pod["containers"][0]


def _init(pod: dict) -> dict:
    return pod["initContainers"][0]


def _controls_of(messages: list[str]) -> set[tuple[str, str]]:
    return {tuple(m.split(": ", 2)[:2]) for m in messages}


def _case(level, control, change, extra_restricted=(), annotations=None):
    return {"level": level, "control": control, "change": change,
            "extra": set(extra_restricted), "annotations": annotations}


def _set(path_fn, key, value):
    """A change that sets path_fn(pod)[key] = value."""
    def change(pod):
        path_fn(pod)[key] = value
    return change


def _sc_of(container_fn):
    return lambda pod: container_fn(pod).setdefault("securityContext", {})


def _pod_sc_of(pod):
    return pod.setdefault("securityContext", {})


def _violating_cases() -> list[dict]:
    """One case per way to break a control; each breaks only that control
    (restricted cases break nothing at baseline). `extra` names restricted
    controls a baseline violation necessarily breaks as well."""
    B, R = BASELINE, RESTRICTED
    return [
        # Baseline
        _case(B, "HostProcess", lambda p: _pod_sc_of(p).update(
            windowsOptions={"hostProcess": True})),
        _case(B, "HostProcess", _set(_sc_of(_init), "windowsOptions", {"hostProcess": True})),
        _case(B, "Host Namespaces", _set(lambda p: p, "hostNetwork", True)),
        _case(B, "Host Namespaces", _set(lambda p: p, "hostPID", True)),
        _case(B, "Host Namespaces", _set(lambda p: p, "hostIPC", True)),
        _case(B, "Privileged Containers", _set(_sc_of(_init), "privileged", True)),
        _case(B, "Capabilities", lambda p: _app(p)["securityContext"]["capabilities"]["add"].append("SYS_ADMIN"),
              extra_restricted={"Capabilities"}),
        _case(B, "HostPath Volumes", lambda p: p["volumes"].append(
            {"name": "host", "hostPath": {"path": "/var/run"}}), extra_restricted={"Volume Types"}),
        _case(B, "Host Ports", lambda p: _app(p)["ports"][0].update(hostPort=8080)),
        _case(B, "Host Probes / Lifecycle Hooks",
              lambda p: _app(p)["livenessProbe"]["httpGet"].update(host="169.254.169.254")),
        _case(B, "Host Probes / Lifecycle Hooks", _set(_init, "lifecycle", {
            "preStop": {"tcpSocket": {"port": 80, "host": "10.0.0.1"}}})),
        _case(B, "Host Probes / Lifecycle Hooks", _set(_app, "startupProbe", {
            "tcpSocket": {"port": 80, "host": "example.com"}})),
        _case(B, "AppArmor", lambda p: _pod_sc_of(p).update(appArmorProfile={"type": "Unconfined"})),
        _case(B, "AppArmor", _set(_sc_of(_app), "appArmorProfile", {"type": "Unconfined"})),
        _case(B, "AppArmor", lambda p: None, annotations={
            APPARMOR_ANNOTATION_PREFIX + "app": "unconfined"}),
        _case(B, "SELinux", lambda p: _pod_sc_of(p).update(seLinuxOptions={"type": "spc_t"})),
        _case(B, "SELinux", _set(_sc_of(_init), "seLinuxOptions", {"user": "system_u"})),
        _case(B, "SELinux", _set(_sc_of(_app), "seLinuxOptions", {"role": "system_r"})),
        _case(B, "/proc Mount Type", _set(_sc_of(_init), "procMount", "Unmasked")),
        _case(B, "Seccomp", _set(_sc_of(_app), "seccompProfile", {"type": "Unconfined"}),
              extra_restricted={"Seccomp"}),
        _case(B, "Seccomp", lambda p: _pod_sc_of(p).update(seccompProfile={"type": "Unconfined"}),
              extra_restricted={"Seccomp"}),
        _case(B, "Sysctls", lambda p: _pod_sc_of(p)["sysctls"].append(
            {"name": "kernel.msgmax", "value": "1"})),
        # Restricted
        _case(R, "Volume Types", lambda p: p["volumes"].append(
            {"name": "nfs", "nfs": {"server": "nfs", "path": "/"}})),
        _case(R, "Volume Types", lambda p: p["volumes"].append(
            {"name": "repo", "gitRepo": {"repository": "https://example.com/r.git"}})),
        _case(R, "Privilege Escalation", lambda p: _init(p)["securityContext"].pop(
            "allowPrivilegeEscalation")),
        _case(R, "Privilege Escalation", _set(_sc_of(_app), "allowPrivilegeEscalation", True)),
        _case(R, "Running as Non-root", lambda p: _pod_sc_of(p).pop("runAsNonRoot")),
        _case(R, "Running as Non-root", lambda p: _pod_sc_of(p).update(runAsNonRoot=False)),
        _case(R, "Running as Non-root", _set(_sc_of(_app), "runAsNonRoot", False)),
        _case(R, "Running as Non-root user", lambda p: _pod_sc_of(p).update(runAsUser=0)),
        _case(R, "Running as Non-root user", _set(_sc_of(_init), "runAsUser", 0)),
        _case(R, "Seccomp", lambda p: _pod_sc_of(p).pop("seccompProfile")),
        _case(R, "Seccomp", lambda p: (
            _pod_sc_of(p).pop("seccompProfile"),
            _sc_of(_app)(p).update(seccompProfile={"type": "RuntimeDefault"}))),
        _case(R, "Capabilities", lambda p: _app(p)["securityContext"]["capabilities"].pop("drop")),
        _case(R, "Capabilities", lambda p: _init(p)["securityContext"]["capabilities"]["add"].append("CHOWN")),
        _case(R, "/proc Mount Type (user-namespace pods)", lambda p: (
            p.update(hostUsers=False), _sc_of(_app)(p).update(procMount="Unmasked"))),
    ]


def _compliant_changes() -> list[tuple[str, object, dict | None]]:
    """Changes that must leave the pod compliant at both levels."""
    return [
        ("hostPort 0", lambda p: _app(p)["ports"][0].update(hostPort=0), None),
        ("host probe host \"\"", lambda p: _app(p)["livenessProbe"]["httpGet"].update(host=""), None),
        ("hostProcess false", _set(_sc_of(_app), "windowsOptions", {"hostProcess": False}), None),
        ("hostNetwork false", _set(lambda p: p, "hostNetwork", False), None),
        ("privileged false", _set(_sc_of(_app), "privileged", False), None),
        ("AppArmor Localhost", _set(_sc_of(_app), "appArmorProfile",
                                    {"type": "Localhost", "localhostProfile": "p"}), None),
        ("AppArmor annotations", lambda p: None, {
            APPARMOR_ANNOTATION_PREFIX + "app": "runtime/default",
            APPARMOR_ANNOTATION_PREFIX + "init": "localhost/my-profile",
            "unrelated": "unconfined"}),
        ("SELinux container_engine_t", _set(_sc_of(_app), "seLinuxOptions",
                                            {"type": "container_engine_t", "level": "s0:c1,c2"}), None),
        ("procMount Default", _set(_sc_of(_app), "procMount", "Default"), None),
        ("seccomp Localhost on containers only", lambda p: (
            _pod_sc_of(p).pop("seccompProfile"),
            _sc_of(_app)(p).update(seccompProfile={"type": "Localhost", "localhostProfile": "x"}),
            _sc_of(_init)(p).update(seccompProfile={"type": "RuntimeDefault"})), None),
        ("runAsNonRoot on containers only", lambda p: (
            _pod_sc_of(p).pop("runAsNonRoot"),
            _sc_of(_app)(p).update(runAsNonRoot=True),
            _sc_of(_init)(p).update(runAsNonRoot=True)), None),
        ("safe sysctl since 1.29", lambda p: _pod_sc_of(p)["sysctls"].append(
            {"name": "net.ipv4.tcp_keepalive_time", "value": "600"}), None),
        ("csi and ephemeral volumes", lambda p: p["volumes"].extend([
            {"name": "c", "csi": {"driver": "d"}},
            {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "d", "downwardAPI": {"items": []}},
            {"name": "s", "secret": {"secretName": "s"}},
            {"name": "v", "persistentVolumeClaim": {"claimName": "v"}}]), None),
        ("windows pod without Linux-only settings", lambda p: (
            p.update(os={"name": "windows"}),
            _pod_sc_of(p).pop("seccompProfile"),
            _app(p).update(securityContext={"runAsNonRoot": True}),
            _init(p).pop("securityContext")), None),
        ("hostUsers false: runAsNonRoot/runAsUser not checked", lambda p: (
            p.update(hostUsers=False),
            _pod_sc_of(p).pop("runAsNonRoot"),
            _pod_sc_of(p).update(runAsUser=0)), None),
    ]


def self_test() -> list[str]:
    failures: list[str] = []
    passed = 0

    def expect(ok: bool, what: str):
        nonlocal passed
        if ok:
            passed += 1
        else:
            failures.append(what)

    # A fully compliant restricted pod passes both levels.
    for level in (BASELINE, RESTRICTED):
        got = violations(_compliant_pod(), level)
        expect(got == [], f"compliant pod at {level}: {got}")
    # The default (minimally specified) pod passes baseline.
    got = violations({"containers": [{"name": "a", "image": "x"}]}, BASELINE)
    expect(got == [], f"minimal pod at baseline: {got}")

    # Every control is exercised, and each violating pod is flagged right.
    covered: set[tuple[str, str]] = set()
    for case in _violating_cases():
        pod = _compliant_pod()
        case["change"](pod)
        key = (case["level"], case["control"])
        covered.add(key)
        at_b = _controls_of(violations(pod, BASELINE, annotations=case["annotations"]))
        at_r = _controls_of(violations(pod, RESTRICTED, annotations=case["annotations"]))
        name = f"{case['level']}/{case['control']}"
        if case["level"] == BASELINE:
            expect(at_b == {key}, f"{name}: at baseline got {sorted(at_b)}")
            allowed = {key} | {(RESTRICTED, c) for c in case["extra"]}
            expect(key in at_r and at_r <= allowed, f"{name}: at restricted got {sorted(at_r)}")
        else:
            expect(at_b == set(), f"{name}: flagged at baseline: {sorted(at_b)}")
            expect(at_r == {key}, f"{name}: at restricted got {sorted(at_r)}")
    for level, names in CONTROLS.items():
        for control in names:
            expect((level, control) in covered, f"no self-test case for {level}/{control}")

    for what, change, annotations in _compliant_changes():
        pod = _compliant_pod()
        change(pod)
        for level in (BASELINE, RESTRICTED):
            got = violations(pod, level, annotations=annotations)
            expect(got == [], f"compliant change '{what}' at {level}: {got}")

    # procMount relaxation: Baseline allows Unmasked with hostUsers: false,
    # Restricted does not.
    pod = _compliant_pod()
    pod["hostUsers"] = False
    _app(pod)["securityContext"]["procMount"] = "Unmasked"
    expect(violations(pod, BASELINE) == [], "hostUsers false + Unmasked flagged at baseline")
    expect(violations(pod, RESTRICTED) == [
        "restricted: /proc Mount Type (user-namespace pods): procMount Unmasked != Default: "
        "spec.containers[0](app).securityContext.procMount"],
        f"hostUsers false + Unmasked at restricted: {violations(pod, RESTRICTED)}")

    # Message format.
    pod = _compliant_pod()
    _init(pod)["name"] = "dind"
    del _init(pod)["securityContext"]["allowPrivilegeEscalation"]
    got = violations(pod, RESTRICTED)
    expect(got == ["restricted: Privilege Escalation: allowPrivilegeEscalation != false: "
                   "spec.initContainers[0](dind).securityContext.allowPrivilegeEscalation"],
           f"message format: {got}")

    # The containers filter: container-level violations only for the named
    # containers, pod-level ones always, inherited pod-level settings count.
    pod = _compliant_pod()
    _init(pod)["securityContext"]["privileged"] = True
    expect(violations(pod, BASELINE, containers={"app"}) == [],
           "filter: violation in an unselected container reported")
    expect(len(violations(pod, BASELINE, containers={"init"})) == 1,
           "filter: violation in a selected container not reported")
    pod["hostNetwork"] = True
    expect(_controls_of(violations(pod, BASELINE, containers={"app"}))
           == {(BASELINE, "Host Namespaces")},
           "filter: pod-level violation not reported")
    expect(_controls_of(violations(pod, BASELINE, containers=set()))
           == {(BASELINE, "Host Namespaces")},
           "filter: pod-level violation not reported with an empty set")
    pod = _compliant_pod()
    del pod["securityContext"]["runAsNonRoot"]
    _app(pod)["securityContext"]["runAsNonRoot"] = True
    expect(violations(pod, RESTRICTED, containers={"app"}) == [],
           "filter: container setting runAsNonRoot itself flagged")
    got = violations(pod, RESTRICTED, containers={"init"})
    expect(got == ["restricted: Running as Non-root: runAsNonRoot unset and not true at pod level: "
                   "spec.initContainers[0](init).securityContext.runAsNonRoot"],
           f"filter: inherited pod-level runAsNonRoot: {got}")
    del pod["securityContext"]["seccompProfile"]
    _app(pod)["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    expect(violations(pod, RESTRICTED, containers={"app"}) == [],
           "filter: container with its own seccomp profile flagged")
    expect(_controls_of(violations(pod, RESTRICTED, containers={"init"}))
           == {(RESTRICTED, "Running as Non-root"), (RESTRICTED, "Seccomp")},
           "filter: inherited missing pod-level seccomp not reported")
    annotations = {APPARMOR_ANNOTATION_PREFIX + "init": "unconfined"}
    expect(violations(_compliant_pod(), BASELINE, containers={"app"}, annotations=annotations) == [],
           "filter: AppArmor annotation of an unselected container reported")
    expect(len(violations(_compliant_pod(), BASELINE, containers={"init"},
                          annotations=annotations)) == 1,
           "filter: AppArmor annotation of a selected container not reported")

    # Inputs are not modified.
    pod = _compliant_pod()
    before = copy.deepcopy(pod)
    violations(pod, RESTRICTED)
    expect(pod == before, "violations() modified its input")

    # Unknown level.
    try:
        violations(_compliant_pod(), "privileged")
        expect(False, "unknown level accepted")
    except ValueError:
        expect(True, "")

    self_test.passed = passed
    return failures


if __name__ == "__main__":
    fails = self_test()
    for failure in fails:
        print("FAIL:", failure)
    print(f"{self_test.passed} passed, {len(fails)} failed")
    sys.exit(1 if fails else 0)
