"""Kubelet and kube-proxy of the Kubernetes TEST DOUBLE: pods are real processes on this machine.

A pod bound to the double's node gets a folder ``<root>/<namespace>/<pod>/``; each ``emptyDir`` volume is a
sub-folder and each ``configMap`` / ``secret`` volume is written from the stored object (missing: a
``FailedMount`` event and the pod waits, as the kubelet does). Containers run as processes:

- **images**: an image whose repository ends in ``kfp-tabular`` runs its command with this machine's
  installation (``kfp-tabular`` is the virtualenv's entry point): the init container is the REAL
  ``kfp-tabular fetch-model`` against the real S3 server. ``tensorflow/serving`` runs ``kfp-tabular serve``,
  the local stand-in for TF Serving (its binary cannot run here), with TF Serving's flags translated
  (``--port`` gRPC, ``--rest_api_port`` REST, ``--model_config_file`` read for the model name and base path,
  unknown flags refused as TF Serving does); any other image fails to pull (``ErrImagePull`` then
  ``ImagePullBackOff``), as a missing tag on a registry.
- **paths and env**: arguments and env values under a ``mountPath`` are rewritten to the volume's folder;
  ``$(VAR)`` references expand (``$$`` escapes); ``secretKeyRef`` / ``configMapKeyRef`` / ``fieldRef`` /
  ``envFrom`` are resolved, a missing non-optional one is ``CreateContainerConfigError``; container ports are
  mapped to free ports on 127.0.0.1 (every pod shares that address).
- **status**: init containers in order, each restarted until it succeeds; then the containers. States
  ``waiting`` (``PodInitializing``, ``ContainerCreating``, ``CrashLoopBackOff``, ``ErrImagePull``...),
  ``running``, ``terminated`` with the real exit code (``Completed`` / ``Error``; ``OOMKilled`` 137 when the
  process's resident memory passes ``resources.limits.memory``); ``lastState``, ``restartCount``, ``ready``; pod
  conditions ``PodScheduled``, ``PodReadyToStartContainers``, ``Initialized``, ``ContainersReady``, ``Ready``
  with the kubelet's reasons and messages; events ``Pulling``, ``Pulled``, ``Created``, ``Started``, ``Failed``,
  ``BackOff``, ``Unhealthy``, ``Killing``.
- **probes**: ``startupProbe`` gates ``readinessProbe`` and ``livenessProbe``; ``httpGet`` (200-399 passes) and
  ``tcpSocket`` against the mapped ports; a failed startup or liveness probe restarts the container.
- **logs**: each container instance's stdout and stderr, for ``pods/<name>/log`` (``previous`` too).
- **deletion**: ``Ready`` goes False at once, SIGTERM, SIGKILL after the grace period, then the pod is removed.

**Time is compressed** by ``time_scale`` (default 0.1) for probe periods and delays, restart back-off (10 s
doubling to 300 s on a node) and termination grace, so that a test does not wait real minutes; the
Deployment's ``progressDeadlineSeconds`` is not scaled. Faults (see :class:`~doubles.k8s_controllers.Faults`)
act on the regular containers: ``image-pull``; ``crash-loop`` (the stand-in is started with an argument it
rejects, so it exits 2 on every start); ``oom`` (memory limit cut to 48 MiB, so the real process is killed as
OOMKilled); ``wrong-answer`` (:mod:`doubles.skewed_serve` instead of the stand-in); ``never-ready`` (the stand-in
serves the model under another name, so the probes' ``/v1/models/<name>`` answers 404 for real).

The kube-proxy part forwards each Service port from a free port on 127.0.0.1 to the Ready pods its selector
picks (round robin per connection), so clients reach "the Service" as from inside the cluster.

Not modelled: cgroups and CPU limits, a read-only root filesystem, users and security contexts, networking
isolation (NetworkPolicy), image digests, node pressure and eviction.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doubles.k8s_api import Store
from doubles.k8s_controllers import NODE, Faults, record_event
from doubles.k8s_objects import ApiError, bad_request, now, selector_object_matcher

VENV_BIN = Path(sys.executable).parent
TESTS_DIR = Path(__file__).resolve().parents[1]
OOM_FAULT_LIMIT = 48 << 20
RESTART_BACKOFF_S, MAX_BACKOFF_S = 10.0, 300.0
# Flags of tensorflow_model_server (tensorflow_serving/model_servers/main.cc).
TF_SERVING_FLAGS = {
    "port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads", "rest_api_timeout_in_ms",
    "rest_api_enable_cors_support", "enable_batching", "allow_version_labels_for_unavailable_models",
    "batching_parameters_file", "enable_per_model_batching_parameters", "model_config_file",
    "model_config_file_poll_wait_seconds", "model_name", "model_base_path", "num_load_threads",
    "num_unload_threads", "max_num_load_retries", "load_retry_interval_micros", "file_system_poll_wait_seconds",
    "flush_filesystem_caches", "tensorflow_session_parallelism", "tensorflow_session_config_file",
    "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism", "use_alts_credentials",
    "ssl_config_file", "platform_config_file", "per_process_gpu_memory_fraction", "saved_model_tags",
    "grpc_channel_arguments", "grpc_max_threads", "enable_model_warmup", "num_request_iterations_for_warmup",
    "version", "monitoring_config_file", "remove_unused_fields_from_bundle_metagraph", "prefer_tflite_model",
    "num_tflite_pools", "num_tflite_interpreters_per_pool", "enable_signature_method_name_check",
    "xla_cpu_compilation_enabled", "enable_profiler", "thread_pool_factory_config_file", "mixed_precision",
    "skip_initialize_tpu", "enable_grpc_healthcheck_service",
}


class ImagePullError(Exception):
    """The double's "registry" has no such image."""


class ConfigError(Exception):
    """``CreateContainerConfigError``: a Secret, ConfigMap or key the container needs is missing."""


def memory_bytes(value: Any) -> int | None:
    """``resource.Quantity`` for memory: ``2Gi``, ``256Mi``, ``1G``, ``1000``."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTE]i?)?", str(value))
    if not match:
        return None
    units = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 1 << 10, "Mi": 1 << 20,
             "Gi": 1 << 30, "Ti": 1 << 40}
    return int(float(match.group(1)) * units.get(match.group(2), 1))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables are replaced, ``$$`` is a literal ``$``."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i:]:
            end = text.index(")", i)
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _image_repository(image: str) -> tuple[str, str]:
    name = image.split("@", 1)[0]
    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    return repo, tag


@dataclass
class Instance:
    """One run of a container: its process and its log file."""

    number: int
    log: Path
    process: subprocess.Popen | None = None
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None
    reason: str = ""
    killed_by_us: bool = False


@dataclass
class ContainerState:
    """What the kubelet reports of one container."""

    spec: dict[str, Any]
    init: bool
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "PodInitializing"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    ready: bool = False
    started: bool = False
    instances: list[Instance] = field(default_factory=list)
    image_id: str = ""

    @property
    def name(self) -> str:
        return self.spec["name"]

    def as_status(self) -> dict[str, Any]:
        status = {"name": self.name, "image": self.spec.get("image", ""), "imageID": self.image_id,
                  "ready": self.ready, "restartCount": self.restarts, "started": self.started,
                  "state": self.state, "lastState": self.last_state}
        if self.instances and self.instances[-1].process is not None:
            status["containerID"] = f"double://{self.name}-{self.instances[-1].number}"
        return status


class PodWorker(threading.Thread):
    """Runs one pod: volumes, init containers, containers, probes, and its termination."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        super().__init__(name=f"pod-{pod['metadata']['name']}", daemon=True)
        self.kubelet = kubelet
        self.store = kubelet.store
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.spec = pod["spec"]
        self.faults = kubelet.faults.of(pod)
        self.folder = kubelet.root / self.namespace / self.name
        self.scale = kubelet.time_scale
        self.containers = {c["name"]: ContainerState(c, True) for c in self.spec.get("initContainers") or []}
        self.containers.update({c["name"]: ContainerState(c, False) for c in self.spec.get("containers") or []})
        self.ports: dict[int, int] = {}  # containerPort -> host port
        self.volumes: dict[str, Path] = {}
        self.initialized = False
        self.sandbox_ready = False
        self.stopping = threading.Event()
        self.lock = threading.RLock()
        self._conditions: dict[str, dict[str, Any]] = {}
        self.start_time = now()

    # -- status ------------------------------------------------------------------------------------------------

    def _condition(self, kind: str, value: bool, reason: str = "", message: str = "") -> None:
        status = "True" if value else "False"
        current = self._conditions.get(kind)
        if current is not None and current["status"] == status and current.get("reason", "") == reason:
            return
        condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": now()}
        if reason:
            condition.update(reason=reason, message=message)
        self._conditions[kind] = condition

    def publish(self) -> None:
        """Write the pod's status (the kubelet's status manager)."""
        with self.lock:
            inits = [c for c in self.containers.values() if c.init]
            mains = [c for c in self.containers.values() if not c.init]
            self._condition("PodReadyToStartContainers", self.sandbox_ready)
            pending_init = [c.name for c in inits if "terminated" not in c.state
                            or c.state["terminated"].get("exitCode") != 0]
            self._condition("Initialized", not pending_init, "" if not pending_init else "ContainersNotInitialized",
                            f"containers with incomplete status: [{' '.join(pending_init)}]" if pending_init else "")
            unready = [c.name for c in mains if not c.ready]
            for kind in ("ContainersReady", "Ready"):
                self._condition(kind, not unready, "ContainersNotReady" if unready else "",
                                f"containers with unready status: [{' '.join(unready)}]" if unready else "")
            running = any("running" in c.state for c in mains)
            phase = "Running" if self.initialized and (running or any(c.restarts for c in mains)) else "Pending"
            statuses = {
                "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}], "startTime": self.start_time, "qosClass": "Burstable",
                "initContainerStatuses": [c.as_status() for c in inits],
                "containerStatuses": [c.as_status() for c in mains],
            }
            conditions = dict(self._conditions)

        def write(obj: dict[str, Any]) -> None:
            existing = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
            scheduled = existing.get("PodScheduled")
            merged = [conditions[k] for k in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")]
            obj["status"] = {**statuses, "conditions": merged + ([scheduled] if scheduled else [])}
            if not statuses["initContainerStatuses"]:
                obj["status"].pop("initContainerStatuses")

        self.store.mutate("", "pods", self.namespace, self.name, write, status=True)

    def event(self, type_: str, reason: str, message: str) -> None:
        pod = self.store.find("", "pods", self.namespace, self.name)
        if pod is not None:
            record_event(self.store, pod, type_, reason, message, "kubelet")

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # the pod ends; the test sees the traceback
            import traceback

            self.kubelet.errors.append(traceback.format_exc())
        finally:
            self._terminate_all()
            if self.stopping.is_set():
                with contextlib.suppress(ApiError):
                    self.store.remove("", "pods", self.namespace, self.name)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the pod is being deleted; True when it is."""
        return self.stopping.wait(seconds)

    def _run(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        self.publish()
        while not self._mount_volumes():
            if self._sleep(max(0.2, 2.0 * self.scale)):
                return
        self.sandbox_ready = True
        for container in self.containers.values():
            container.state = {"waiting": {"reason": "PodInitializing"}} if container.init or self.spec.get(
                "initContainers") else {"waiting": {"reason": "ContainerCreating"}}
        self.publish()
        for container in [c for c in self.containers.values() if c.init]:
            if not self._run_init(container):
                return
        self.initialized = True
        for container in [c for c in self.containers.values() if not c.init]:
            container.state = {"waiting": {"reason": "ContainerCreating"}}
        self.publish()
        threads = [threading.Thread(target=self._run_main, args=(c,), daemon=True, name=f"{self.name}-{c.name}")
                   for c in self.containers.values() if not c.init]
        for thread in threads:
            thread.start()
        self.stopping.wait()
        for thread in threads:
            thread.join(30)

    def _mount_volumes(self) -> bool:
        for volume in self.spec.get("volumes") or []:
            name = volume["name"]
            folder = self.folder / "volumes" / name
            folder.mkdir(parents=True, exist_ok=True)
            self.volumes[name] = folder
            for kind, resource in (("configMap", "configmaps"), ("secret", "secrets")):
                if kind not in volume:
                    continue
                source = volume[kind]
                ref = source.get("name") or source.get("secretName", "")
                obj = self.store.find("", resource, self.namespace, ref)
                if obj is None:
                    if source.get("optional"):
                        continue
                    self.event("Warning", "FailedMount", f'MountVolume.SetUp failed for volume "{name}" : '
                               f'{kind.lower()} "{ref}" not found')
                    return False
                for key, data in _data(obj).items():
                    (folder / key).write_bytes(data)
        return True

    def _container_env(self, container: ContainerState) -> dict[str, str]:
        pod = self.store.get("", "pods", self.namespace, self.name)
        env: dict[str, str] = {}
        for source in container.spec.get("envFrom") or []:
            for kind, resource in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                if kind in source:
                    obj = self.store.find("", resource, self.namespace, source[kind]["name"])
                    if obj is None and not source[kind].get("optional"):
                        raise ConfigError(f'{kind[:-3].lower()} "{source[kind]["name"]}" not found')
                    for key, value in _data(obj or {}).items():
                        env[source.get("prefix", "") + key] = value.decode()
        for item in container.spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(item["value"], env)
                continue
            ref = item.get("valueFrom") or {}
            for kind, resource, label in (("secretKeyRef", "secrets", "Secret"),
                                          ("configMapKeyRef", "configmaps", "ConfigMap")):
                if kind not in ref:
                    continue
                key_ref = ref[kind]
                obj = self.store.find("", resource, self.namespace, key_ref["name"])
                values = _data(obj) if obj is not None else None
                if values is None:
                    if key_ref.get("optional"):
                        break
                    raise ConfigError(f'{label.lower()} "{key_ref["name"]}" not found')
                if key_ref["key"] not in values:
                    if key_ref.get("optional"):
                        break
                    raise ConfigError(f"couldn't find key {key_ref['key']} in {label} "
                                      f"{self.namespace}/{key_ref['name']}")
                env[item["name"]] = values[key_ref["key"]].decode()
            if "fieldRef" in ref:
                env[item["name"]] = _field(pod, ref["fieldRef"]["fieldPath"])
            if "resourceFieldRef" in ref:
                env[item["name"]] = "0"
        return env

    def _rewrite(self, value: str, mounts: list[tuple[str, Path]]) -> str:
        prefix, sep, rest = value.partition("=") if value.startswith("--") and "=" in value else ("", "", value)
        for mount_path, folder in mounts:
            if rest == mount_path or rest.startswith(mount_path.rstrip("/") + "/"):
                rest = str(folder) + rest[len(mount_path.rstrip("/")):]
                break
        return f"{prefix}{sep}{rest}"

    def _mounts(self, container: ContainerState) -> list[tuple[str, Path]]:
        mounts = [(m["mountPath"], self.volumes[m["name"]] / m.get("subPath", ""))
                  for m in container.spec.get("volumeMounts") or [] if m["name"] in self.volumes]
        return sorted(mounts, key=lambda m: -len(m[0]))

    def _command(self, container: ContainerState, env: dict[str, str]) -> list[str]:
        """The process for a container, or ImagePullError (see the module docstring)."""
        image = container.spec.get("image", "")
        repo, _ = _image_repository(image)
        mounts = self._mounts(container)
        if not container.init and "image-pull" in self.faults:
            raise ImagePullError(f'rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/{image}"'
                                 f': failed to resolve reference "docker.io/{image}": docker.io/{image}: not found')
        command = [_expand(part, env) for part in (container.spec.get("command") or [])]
        args = [_expand(part, env) for part in (container.spec.get("args") or [])]
        if repo.rsplit("/", 1)[-1] == "kfp-tabular":
            argv = [self._rewrite(part, mounts) for part in command + args]
            if not argv:
                raise ImagePullError("the kfp-tabular image has no entrypoint: the container needs a command")
            if "/" not in argv[0] and (VENV_BIN / argv[0]).exists():
                argv[0] = str(VENV_BIN / argv[0])
            return argv
        if repo in ("tensorflow/serving", "docker.io/tensorflow/serving") or repo.endswith("/tensorflow/serving"):
            return self._tf_serving(container, command, args, env, mounts)
        raise ImagePullError(f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to '
                             f'resolve reference "{image}": not found')

    def _tf_serving(self, container: ContainerState, command: list[str], args: list[str], env: dict[str, str],
                    mounts: list[tuple[str, Path]]) -> list[str]:
        if not command:  # the image's entrypoint script, tf_serving_entrypoint.sh
            name = env.get("MODEL_NAME", "model")
            args = ["--port=8500", "--rest_api_port=8501", f"--model_name={name}",
                    f"--model_base_path={env.get('MODEL_BASE_PATH', '/models')}/{name}", *args]
        elif Path(command[0]).name != "tensorflow_model_server":
            raise ImagePullError(f"the double runs only tensorflow_model_server from {container.spec['image']}")
        flags: dict[str, str] = {}
        for arg in [*command[1:], *args]:
            key, _, value = arg.lstrip("-").partition("=")
            if key not in TF_SERVING_FLAGS:
                return [sys.executable, "-c", f"print(\"ERROR: unknown command line flag '{key}'\"); raise SystemExit(1)"]
            flags[key] = value
        name, base = flags.get("model_name", "default"), flags.get("model_base_path", "")
        config = flags.get("model_config_file")
        if config:
            text = Path(self._rewrite(config, mounts)).read_text()
            found = re.search(r'name:\s*"([^"]+)"', text), re.search(r'base_path:\s*"([^"]+)"', text)
            if found[0] and found[1]:
                name, base = found[0].group(1), found[1].group(1)
        grpc = self.ports.get(int(flags.get("port", "8500")))
        rest = self.ports.get(int(flags.get("rest_api_port", "0") or 0))
        if "never-ready" in self.faults:
            name = f"{name}-never-ready"
        serve = ["-m", "doubles.skewed_serve"] if "wrong-answer" in self.faults else []
        argv = [str(VENV_BIN / "kfp-tabular"), "serve"] if not serve else [sys.executable, *serve]
        argv += ["--model-repository", self._rewrite(base, mounts), "--model-name", name, "--host", "127.0.0.1",
                 "--port", str(rest or _free_port()), "--poll-seconds",
                 flags.get("file_system_poll_wait_seconds", "1") or "1"]
        if grpc:
            argv += ["--grpc-port", str(grpc)]
        if "crash-loop" in self.faults:
            argv += ["--poll-seconds", "0"]  # refused by the server: it exits 2 on every start
        return argv

    def _limit(self, container: ContainerState) -> int | None:
        if not container.init and "oom" in self.faults:
            return OOM_FAULT_LIMIT
        return memory_bytes(((container.spec.get("resources") or {}).get("limits") or {}).get("memory"))

    def _start(self, container: ContainerState) -> Instance | None:
        """Pull, create and start one instance; None when it could not start (state says why)."""
        image = container.spec.get("image", "")
        try:
            env = self._container_env(container)
        except ConfigError as error:
            container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
            self.event("Warning", "Failed", f"Error: {error}")
            self.publish()
            return None
        for port in container.spec.get("ports") or []:
            self.ports.setdefault(port["containerPort"], _free_port())
        self.event("Normal", "Pulling", f'Pulling image "{image}"')
        try:
            argv = self._command(container, env)
        except ImagePullError as error:
            reason = "ErrImagePull" if "waiting" not in container.state or container.state["waiting"].get(
                "reason") not in ("ErrImagePull", "ImagePullBackOff") else "ImagePullBackOff"
            message = str(error) if reason == "ErrImagePull" else f'Back-off pulling image "{image}"'
            container.state = {"waiting": {"reason": reason, "message": message}}
            if reason == "ErrImagePull":
                self.event("Warning", "Failed", f'Failed to pull image "{image}": {error}')
            else:
                self.event("Normal", "BackOff", message)
            self.event("Warning", "Failed", f"Error: {reason}")
            self.publish()
            return None
        container.image_id = f"docker.io/{image}@sha256:{'0' * 64}"
        self.event("Normal", "Pulled", f'Container image "{image}" already present on machine')
        instance = Instance(len(container.instances), self.folder / "logs" / f"{container.name}-{len(container.instances)}.log")
        container.instances.append(instance)
        process_env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.folder),
                       "HOSTNAME": self.name, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                       "PYTHONPATH": str(TESTS_DIR), "TMPDIR": str(self.folder)}
        tmp = dict(self._mounts(container)).get("/tmp")
        if tmp is not None:
            process_env["TMPDIR"] = str(tmp)
        mounts = self._mounts(container)
        process_env.update({k: self._rewrite(v, mounts) if v.startswith("/") else v for k, v in env.items()})
        self.event("Normal", "Created", f"Created container: {container.name}")
        with open(instance.log, "wb") as log:
            instance.process = subprocess.Popen(argv, env=process_env, cwd=self.folder, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)
        instance.started_at = now()
        container.state = {"running": {"startedAt": instance.started_at}}
        self.event("Normal", "Started", f"Started container {container.name}")
        self.publish()
        return instance

    def _wait(self, container: ContainerState, instance: Instance, probes: bool) -> int:
        """Wait for the process (watching memory, running probes); its exit code."""
        assert instance.process is not None
        limit = self._limit(container)
        prober = Prober(self, container, instance) if probes else None
        while instance.process.poll() is None:
            if limit is not None and _rss(instance.process.pid) > limit:
                instance.reason = "OOMKilled"
                _kill(instance.process, signal.SIGKILL)
                break
            if prober is not None:
                prober.step()
            if self.stopping.wait(0.1):
                self._terminate(instance)
                break
        code = instance.process.wait()
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal, as container runtimes report
        instance.exit_code, instance.finished_at = code, now()
        if not instance.reason:
            instance.reason = "Completed" if code == 0 else "Error"
        container.ready = False
        container.state = {"terminated": {"exitCode": code, "reason": instance.reason,
                                          "startedAt": instance.started_at, "finishedAt": instance.finished_at,
                                          "containerID": f"double://{container.name}-{instance.number}"}}
        self.publish()
        return code

    def _backoff(self, container: ContainerState) -> bool:
        """CrashLoopBackOff before the next start; True when the pod is being deleted meanwhile."""
        delay = min(MAX_BACKOFF_S, RESTART_BACKOFF_S * 2 ** max(0, container.restarts - 1))
        container.last_state = container.state
        container.restarts += 1
        if container.restarts > 1:
            pod = f"{self.name}_{self.namespace}({self.uid})"
            container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {int(delay)}s "
                                           f"restarting failed container={container.name} pod={pod}"}}
            self.event("Warning", "BackOff", f"Back-off restarting failed container {container.name} in pod {pod}")
            self.publish()
            return self._sleep(delay * self.scale)
        return self._sleep(max(0.2, 1.0 * self.scale))  # the first restart follows at the next sync

    def _run_init(self, container: ContainerState) -> bool:
        while not self.stopping.is_set():
            instance = self._start(container)
            if instance is None:
                if self._sleep(max(0.2, RESTART_BACKOFF_S * self.scale)):
                    return False
                continue
            if self._wait(container, instance, probes=False) == 0:
                container.ready = True
                self.publish()
                return True
            if self.stopping.is_set() or self._backoff(container):
                return False
        return False

    def _run_main(self, container: ContainerState) -> None:
        while not self.stopping.is_set():
            instance = self._start(container)
            if instance is None:
                if self._sleep(max(0.2, RESTART_BACKOFF_S * self.scale)):
                    return
                continue
            container.started = False
            self._wait(container, instance, probes=True)
            container.started = False
            if self.stopping.is_set() or self._backoff(container):
                return

    def stop(self, grace_s: float) -> None:
        """Begin deletion: not ready at once, then SIGTERM and SIGKILL after the grace period."""
        with self.lock:
            for container in self.containers.values():
                container.ready = False
        self.publish()
        for container in self.containers.values():
            if container.instances and container.instances[-1].process is not None \
                    and container.instances[-1].process.poll() is None:
                self.event("Normal", "Killing", f"Stopping container {container.name}")
        self.grace_s = grace_s
        self.stopping.set()

    def _terminate(self, instance: Instance) -> None:
        """SIGTERM, then SIGKILL once the pod's grace period is over (the kubelet's killContainer)."""
        assert instance.process is not None
        _kill(instance.process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            instance.process.wait(getattr(self, "grace_s", 0.0))
        if instance.process.poll() is None:
            _kill(instance.process, signal.SIGKILL)

    def _terminate_all(self) -> None:
        grace = getattr(self, "grace_s", 0.0)
        live = [i.process for c in self.containers.values() for i in c.instances
                if i.process is not None and i.process.poll() is None]
        for process in live:
            _kill(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
            if process.poll() is None:
                _kill(process, signal.SIGKILL)
                process.wait(10)

    def host_port(self, port: Any) -> int | None:
        """The host port a container port (number or name) of this pod is mapped to."""
        if isinstance(port, str) and not port.isdigit():
            for spec in self.spec.get("containers") or []:
                for item in spec.get("ports") or []:
                    if item.get("name") == port:
                        return self.ports.get(item["containerPort"])
            return None
        return self.ports.get(int(port))

    def read_log(self, container_name: str, previous: bool, tail: int | None) -> str:
        container = self.containers[container_name]
        started = [i for i in container.instances if i.process is not None]
        if previous:
            if len(started) < 2:
                raise bad_request(f'previous terminated container "{container_name}" in pod "{self.name}" not found')
            instance = started[-2]
        elif not started:
            waiting = container.state.get("waiting", {}).get("reason", "ContainerCreating")
            if waiting in ("ImagePullBackOff", "ErrImagePull"):
                waiting = "trying and failing to pull image"
            raise bad_request(f'container "{container_name}" in pod "{self.name}" is waiting to start: {waiting}')
        else:
            instance = started[-1]
        lines = instance.log.read_text(errors="replace").splitlines(keepends=True)
        return "".join(lines if tail is None else lines[-tail:] if tail else [])


class Prober:
    """Startup, readiness and liveness probes of one running container instance."""

    def __init__(self, worker: PodWorker, container: ContainerState, instance: Instance) -> None:
        self.worker, self.container, self.instance = worker, container, instance
        spec = container.spec
        self.probes = {kind: spec[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in spec}
        self.started_at = time.monotonic()
        self.next = {kind: self.started_at + probe.get("initialDelaySeconds", 0) * worker.scale
                     for kind, probe in self.probes.items()}
        self.failures = dict.fromkeys(self.probes, 0)
        self.startup_done = "startupProbe" not in self.probes
        if self.startup_done:
            container.started = True
        if "readinessProbe" not in self.probes and self.startup_done:
            container.ready = True
            worker.publish()

    def _check(self, probe: Mapping[str, Any]) -> tuple[bool, str]:
        timeout = max(0.5, probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = self.worker.host_port(get["port"])
            if port is None:
                return False, f"no port {get['port']}"
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                connection.request("GET", get.get("path", "/"))
                status = connection.getresponse().status
                connection.close()
            except OSError as error:
                return False, f'Get "http://127.0.0.1:{port}{get.get("path", "/")}": {error}'
            return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
        if "tcpSocket" in probe:
            port = self.worker.host_port(probe["tcpSocket"]["port"])
            try:
                with socket.create_connection(("127.0.0.1", port or 1), timeout=timeout):
                    return True, ""
            except OSError as error:
                return False, f"dial tcp 127.0.0.1:{port}: {error}"
        return True, ""

    def step(self) -> None:
        clock = time.monotonic()
        for kind, probe in self.probes.items():
            if clock < self.next[kind] or (kind != "startupProbe" and not self.startup_done):
                continue
            if kind == "startupProbe" and self.startup_done:
                continue
            self.next[kind] = clock + max(0.2, probe.get("periodSeconds", 10) * self.worker.scale)
            passed, message = self._check(probe)
            if passed:
                self.failures[kind] = 0
                if kind == "startupProbe":
                    self.startup_done = True
                    self.container.started = True
                    if "readinessProbe" not in self.probes:
                        self.container.ready = True
                    self.worker.publish()
                elif kind == "readinessProbe" and not self.container.ready:
                    self.container.ready = True
                    self.worker.publish()
                continue
            self.failures[kind] += 1
            label = {"startupProbe": "Startup", "readinessProbe": "Readiness", "livenessProbe": "Liveness"}[kind]
            self.worker.event("Warning", "Unhealthy", f"{label} probe failed: {message}")
            if kind == "readinessProbe" and self.container.ready and \
                    self.failures[kind] >= probe.get("failureThreshold", 3):
                self.container.ready = False
                self.worker.publish()
            if kind in ("startupProbe", "livenessProbe") and self.failures[kind] >= probe.get("failureThreshold", 3):
                what = "startup" if kind == "startupProbe" else "liveness"
                self.worker.event("Normal", "Killing", f"Container {self.container.name} failed {what} probe, will "
                                  "be restarted")
                assert self.instance.process is not None
                _kill(self.instance.process, signal.SIGTERM)
                return


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _kill(process: subprocess.Popen, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, number)


def _data(obj: Mapping[str, Any]) -> dict[str, bytes]:
    values = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()} if obj.get("kind") == "Secret" \
        else {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    values.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return values


def _field(pod: Mapping[str, Any], path: str) -> str:
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    return {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
            "spec.nodeName": pod["spec"].get("nodeName", ""), "spec.serviceAccountName":
            pod["spec"].get("serviceAccountName", "default"), "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1"}.get(path, "")


class Kubelet:
    """Starts a :class:`PodWorker` for every pod bound to the node; deletes pods gracefully; serves logs."""

    def __init__(self, store: Store, faults: Faults, root: Path, time_scale: float = 0.1,
                 tick_s: float = 0.1) -> None:
        self.store, self.faults, self.root = store, faults, Path(root)
        self.time_scale, self.tick_s = time_scale, tick_s
        self.workers: dict[str, PodWorker] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def start(self) -> Kubelet:
        self._thread = threading.Thread(target=self._run, name="kubelet-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop(0.0)
        for worker in workers:
            worker.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            for pod in self.store.list("", "pods", where=lambda p: p["spec"].get("nodeName") == NODE):
                uid = pod["metadata"]["uid"]
                with self.lock:
                    if uid not in self.workers and not pod["metadata"].get("deletionTimestamp"):
                        worker = PodWorker(self, pod)
                        self.workers[uid] = worker
                        worker.start()

    def worker(self, namespace: str, name: str) -> PodWorker | None:
        pod = self.store.find("", "pods", namespace, name)
        if pod is None:
            return None
        with self.lock:
            return self.workers.get(pod["metadata"]["uid"])

    def handle_delete(self, group: str, resource: str, pod: dict[str, Any]) -> bool:
        """A pod deletion: mark it terminating and let its worker stop it (True: the kubelet owns it now)."""
        if (group, resource) != ("", "pods"):
            return False
        with self.lock:
            worker = self.workers.get(pod["metadata"]["uid"])
        if worker is None:
            return False  # never started on a node: the API server removes it at once
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)

        def terminating(obj: dict[str, Any]) -> None:
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = grace

        self.store.mutate("", "pods", pod["metadata"]["namespace"], pod["metadata"]["name"], terminating)
        worker.stop(grace * self.time_scale)
        return True

    def read_log(self, namespace: str, name: str, container: str, previous: bool, tail: int | None) -> str:
        worker = self.worker(namespace, name)
        if worker is None:
            pod = self.store.get("", "pods", namespace, name)
            if not pod["spec"].get("nodeName"):
                raise bad_request(f"pod {name} does not have a host assigned")
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        return worker.read_log(container, previous, tail)


class ServiceProxy:
    """kube-proxy: one listener on 127.0.0.1 per Service port, forwarding to Ready pods round robin."""

    def __init__(self, store: Store, kubelet: Kubelet, tick_s: float = 0.2) -> None:
        self.store, self.kubelet, self.tick_s = store, kubelet, tick_s
        self.listeners: dict[tuple[str, str, str], socket.socket] = {}
        self.addresses: dict[tuple[str, str, str], str] = {}
        self._rr = 0
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._threads: list[threading.Thread] = []

    def start(self) -> ServiceProxy:
        for target in (self._watch_services, self._accept_loop):
            thread = threading.Thread(target=target, daemon=True, name=f"kube-proxy-double-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for listener in self.listeners.values():
            listener.close()

    def address(self, namespace: str, service: str, port_name: str) -> str:
        """``127.0.0.1:<port>`` where the Service's port ``port_name`` is reachable (waits for the listener)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = self.addresses.get((namespace, service, port_name))
            if found:
                return found
            time.sleep(0.05)
        raise KeyError(f"service {namespace}/{service} has no port {port_name!r}")

    def _watch_services(self) -> None:
        while not self._stop.wait(self.tick_s):
            for service in self.store.list("", "services"):
                namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
                for port in (service.get("spec") or {}).get("ports") or []:
                    key = (namespace, name, port.get("name") or str(port["port"]))
                    if key in self.listeners:
                        continue
                    listener = socket.socket()
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    listener.bind(("127.0.0.1", 0))
                    listener.listen(64)
                    listener.setblocking(False)
                    self.listeners[key] = listener
                    self.addresses[key] = f"127.0.0.1:{listener.getsockname()[1]}"
                    self._selector.register(listener, selectors.EVENT_READ, (namespace, name, port))

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            if not self.listeners:
                time.sleep(0.05)
                continue
            for key, _ in self._selector.select(timeout=0.1):
                with contextlib.suppress(BlockingIOError):
                    client, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    namespace, name, port = key.data
                    threading.Thread(target=self._forward, args=(client, namespace, name, port), daemon=True).start()

    def endpoints(self, namespace: str, name: str, port: Mapping[str, Any]) -> list[int]:
        service = self.store.find("", "services", namespace, name)
        if service is None:
            return []
        matches = selector_object_matcher({"matchLabels": (service.get("spec") or {}).get("selector") or {}})
        found = []
        for pod in self.store.list("", "pods", namespace, lambda p: matches(p["metadata"].get("labels") or {})):
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
            worker = self.kubelet.worker(namespace, pod["metadata"]["name"])
            if not ready or pod["metadata"].get("deletionTimestamp") or worker is None:
                continue
            host = worker.host_port(port.get("targetPort", port["port"]))
            if host:
                found.append(host)
        return found

    def _forward(self, client: socket.socket, namespace: str, name: str, port: Mapping[str, Any]) -> None:
        client.setblocking(True)
        targets = self.endpoints(namespace, name, port)
        if not targets:
            client.close()  # no endpoints: kube-proxy rejects the connection
            return
        self._rr += 1
        try:
            upstream = socket.create_connection(("127.0.0.1", targets[self._rr % len(targets)]), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def pipe(source: socket.socket, sink: socket.socket) -> None:
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join()
        client.close()
        upstream.close()
