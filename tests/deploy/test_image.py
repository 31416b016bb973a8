#!/usr/bin/python3
"""deploy/Dockerfile built for real: a CPU-only image, its ember-server run and used.

usage: test_image.py --repo DIR --work DIR --emberctl BIN --library LIBEMBER [--keep]

  1. podman and debootstrap (apt-get installs them where missing);
  2. a Debian bookworm base: `debootstrap --variant=minbase bookworm` from the
     bookworm mirror this machine's apt uses (else deb.debian.org; EMBER_DEBIAN_MIRROR
     overrides), kept as WORK/bookworm-minbase.tar.gz so that a rerun skips it
     (delete the file to refresh it), `podman import`ed as the base image;
  3. `podman build --isolation chroot -f deploy/Dockerfile` with the repository as
     the context and that base as BUILD_IMAGE and RUNTIME_IMAGE (the CPU-only
     build the README gives), in a podman store of its own under WORK;
  4. the image's configuration: USER is the non-root user the Kubernetes manifests
     run as (every StatefulSet and Job under deploy/k8s, the follower component's
     too), ENTRYPOINT the StatefulSets' command, the Job's commands in the image,
     port 7070, the HEALTHCHECK;
  5. containers cannot start here (crun cannot set rlimits), so the image is
     mounted (`podman image mount`, read-only, as Kubernetes' readOnlyRootFilesystem)
     and its ENTRYPOINT + CMD run under chroot as that user, in a mount namespace
     of its own with a host folder on /var/lib/ember/checkpoints (the claim) and a
     tmpfs on /tmp; only --listen is changed (127.0.0.1, a free port). Then: the
     gRPC health service ("", ember.v1.Shard) SERVING; the image's HEALTHCHECK
     command (the image's emberctl) passes; a table created, written, pulled,
     pushed and pulled again through this build's libember (the Python package);
     `emberctl info` says backend cpu; a save writes the table on the claim as the
     image's user; the image's ctr_demo (the worker Job's program) trains through it; SIGTERM exits 0; the server started again from the image
     restores the rows;
  6. clean up: the server stopped, the image unmounted, the podman store removed
     (--keep, or EMBER_IMAGE_TEST_KEEP=1, keeps it: a rerun then reuses its layers).

It needs root (debootstrap, podman's store, chroot, mounts): run as root, or with
passwordless sudo (it runs itself again under `sudo -n`). Exit 0 when every check
holds, 1 with the failures listed, 77 (ctest: skipped) with the reason where the
tools cannot be installed or the Debian mirror cannot be reached. ctest label slow.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_deploy as td  # noqa: E402  (its checks, parsers and gRPC health probe)

SKIP = 77
SUITE = "bookworm"
BASE_TAG = "localhost/ember-test-base:bookworm-minbase"
IMAGE_TAG = "localhost/ember:test-cpu"
check, note = td.check, td.note


def skip(why):
    note("SKIPPED: " + why)
    sys.exit(SKIP)


def run(cmd, timeout=600, log=None, **kw):
    """cmd's CompletedProcess (text); with log, its output goes there too."""
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if log:
        with open(log, "a") as f:
            f.write("$ %s\n%s%s\n" % (" ".join(cmd), r.stdout, r.stderr))
    r.seconds = time.time() - t0
    return r


def tail(text, n=40):
    return "\n".join(text.strip().splitlines()[-n:])


# ---- root, tools, mirror -----------------------------------------------------------------

def become_root():
    if os.geteuid() == 0:
        return
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"],
                                               capture_output=True).returncode == 0:
        note("not root: running again under sudo -n")
        os.execvp("sudo", ["sudo", "-n", "-E", sys.executable] + sys.argv)
    skip("needs root (debootstrap, podman's store, chroot and mounts) and there is no "
         "passwordless sudo")


def ensure_tools():
    want = {"podman": "podman", "debootstrap": "debootstrap"}
    missing = [pkg for tool, pkg in want.items() if not shutil.which(tool)]
    if not os.path.exists("/usr/share/keyrings/debian-archive-keyring.gpg"):
        missing.append("debian-archive-keyring")    # debootstrap checks bookworm's Release
    for tool in ("chroot", "tar", "mount"):
        if not shutil.which(tool):
            skip("%s is not on PATH" % tool)
    if not missing:
        return
    if not shutil.which("apt-get"):
        skip("%s missing and no apt-get to install them" % " ".join(missing))
    note("installing", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = run(["apt-get", "update", "-qq"], env=env, timeout=600)
    if r.returncode == 0:
        r = run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                env=env, timeout=900)
    if r.returncode != 0 or not (shutil.which("podman") and shutil.which("debootstrap")):
        skip("could not install %s: apt-get: %s" % (" ".join(missing), tail(r.stderr, 5)))


def apt_mirror():
    """The bookworm mirror apt uses here (deb822 .sources or sources.list), else
    deb.debian.org."""
    if os.environ.get("EMBER_DEBIAN_MIRROR"):
        return os.environ["EMBER_DEBIAN_MIRROR"]
    found = []
    d = "/etc/apt/sources.list.d"
    files = ["/etc/apt/sources.list"] + ([os.path.join(d, f) for f in sorted(os.listdir(d))]
                                         if os.path.isdir(d) else [])
    for p in files:
        try:
            with open(p) as f:
                text = f.read()
        except OSError:
            continue
        if p.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if (SUITE in fields.get("Suites", "").split() and
                        "deb" in fields.get("Types", "").split() and
                        fields.get("Enabled", "yes") != "no"):
                    found += fields.get("URIs", "").split()
        elif p.endswith(".list"):
            for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+%s\s" % SUITE, text, re.M):
                found.append(m.group(1))
    for uri in found:
        if uri.startswith(("http://", "https://")) and "security" not in uri:
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def reachable(mirror):
    url = "%s/dists/%s/Release" % (mirror, SUITE)
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status == 200, url
    except OSError as e:
        return False, "%s: %s" % (url, e)


# ---- the base image and the build ----------------------------------------------------------

def base_tarball(work, mirror, log):
    tarball = os.path.join(work, "%s-minbase.tar.gz" % SUITE)
    if os.path.exists(tarball):
        note("base: %s (cached; delete it to debootstrap again)" % tarball)
        return tarball
    rootfs = os.path.join(work, "rootfs.tmp")
    shutil.rmtree(rootfs, ignore_errors=True)
    note("base: debootstrap --variant=minbase %s from %s" % (SUITE, mirror))
    r = run(["debootstrap", "--variant=minbase", SUITE, rootfs, mirror], timeout=1200, log=log)
    if r.returncode != 0:
        shutil.rmtree(rootfs, ignore_errors=True)
        check(False, "debootstrap: %d\n%s" % (r.returncode, tail(r.stdout + r.stderr)))
        return None
    note("base: debootstrap took %.0f s" % r.seconds)
    r = run(["tar", "-C", rootfs, "--numeric-owner", "-czf", tarball + ".tmp", "."], log=log)
    shutil.rmtree(rootfs, ignore_errors=True)
    if not check(r.returncode == 0, "tar of the rootfs: %s" % r.stderr):
        return None
    os.rename(tarball + ".tmp", tarball)
    return tarball


class Podman:
    """podman on a store of its own under WORK: nothing of the machine's images."""

    def __init__(self, work, log):
        self.root, self.runroot, self.log = (os.path.join(work, "storage"),
                                             os.path.join(work, "run"), log)
        self.driver = "overlay"
        if run(self.cmd("info"), log=log).returncode != 0:
            self.driver = "vfs"                  # no overlayfs here: slower, but works
            if run(self.cmd("info"), log=log).returncode != 0:
                skip("podman cannot use a store in %s with overlay or vfs: see %s"
                     % (self.root, log))
        note("podman: %s, store %s (%s)" % (run(["podman", "--version"]).stdout.strip(),
                                            self.root, self.driver))

    def cmd(self, *args):
        return ["podman", "--root", self.root, "--runroot", self.runroot,
                "--storage-driver", self.driver] + list(args)

    def __call__(self, *args, timeout=600):
        return run(self.cmd(*args), timeout=timeout, log=self.log)

    def remove_store(self):
        self("image", "unmount", "--all", "--force")
        r = self("rmi", "--all", "--force")
        # whatever is still mounted under the store (a run killed half-way)
        with open("/proc/self/mounts") as f:
            mounts = [ln.split()[1] for ln in f]
        for m in sorted(mounts, key=len, reverse=True):
            m = m.replace("\\040", " ")
            if m.startswith((self.root + "/", self.runroot + "/")) or m in (self.root, self.runroot):
                subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)
        return r.returncode == 0


def inside_context(repo, path):
    """Whether `path` would be sent with the build context (under the repository
    and not left out by deploy/Dockerfile.dockerignore)."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(repo))
    if rel.startswith(".."):
        return False
    with open(os.path.join(repo, "deploy", "Dockerfile.dockerignore")) as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    return not td.ignored(rel, patterns)


# ---- what the manifests say ----------------------------------------------------------------

def manifest_users(repo):
    """(where, kind, runAsUser, runAsGroup, fsGroup, runAsNonRoot, command) of every
    container of the StatefulSets and Jobs under deploy/k8s (the leaders', the
    followers' component's, the worker Job's; not the patches)."""
    out = []
    for root, _, files in os.walk(os.path.join(repo, "deploy", "k8s")):
        for name in sorted(files):
            if not name.endswith(".yaml") or name == "kustomization.yaml":
                continue
            with open(os.path.join(root, name)) as f:
                docs = [d for d in td.yaml.safe_load_all(f) if d]
            for doc in docs:
                spec = doc.get("spec", {}).get("template", {}).get("spec", {})
                if doc.get("kind") not in ("StatefulSet", "Job") or "securityContext" not in spec:
                    continue
                sec = spec["securityContext"]
                for c in spec["containers"] + spec.get("initContainers", []):
                    csec = c.get("securityContext", {})
                    out.append(("%s %s/%s" % (os.path.relpath(os.path.join(root, name), repo),
                                              doc["metadata"]["name"], c["name"]),
                                doc["kind"], csec.get("runAsUser", sec.get("runAsUser")),
                                csec.get("runAsGroup", sec.get("runAsGroup")),
                                sec.get("fsGroup"), csec.get("runAsNonRoot", sec.get("runAsNonRoot")),
                                c.get("command")))
    return out


# ---- the server from the image's filesystem ------------------------------------------------

class ImageServer:
    """The image's ENTRYPOINT + CMD under chroot into the mounted image, as uid:gid,
    in a mount namespace of its own (the mounts go with the process). unshare, sh
    and chroot exec one another: the process is the server's, and no fork runs
    this process's atfork handlers (gRPC's, once a channel was used, can hang)."""

    ENTER = ('set -e; r=$1; claim=$2; user=$3; shift 3; '
             'mount --bind "$claim" "$r/var/lib/ember/checkpoints"; '   # the claim
             'mount -t tmpfs -o size=64m,mode=1777 tmpfs "$r/tmp"; '    # the emptyDir
             'mount -t proc proc "$r/proc"; '
             'mount --rbind /dev "$r/dev"; '
             'exec chroot --userspec="$user" "$r" "$@"')

    def __init__(self, rootfs, argv, uid, gid, claim, logdir):
        self.rootfs, self.argv, self.uid, self.gid = rootfs, argv, uid, gid
        self.claim, self.logdir = claim, logdir
        self.proc, self.addr, self.runs = None, None, 0

    def wrap(self, argv):
        # unshare --mount: mounts private to the new namespace (its default propagation)
        return ["unshare", "--mount", "--", "/bin/sh", "-c", self.ENTER, "enter", self.rootfs,
                self.claim, "%d:%d" % (self.uid, self.gid)] + list(argv)

    def inside(self, argv, timeout=60, env=None):
        """A command of the image run the same way (e.g. its HEALTHCHECK)."""
        return subprocess.run(self.wrap(argv), env=dict(self.env(), **(env or {})),
                              capture_output=True, text=True, timeout=timeout)

    @staticmethod
    def env():
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/nonexistent", "LANG": "C.UTF-8"}

    def start(self):
        self.runs += 1
        self.log = os.path.join(self.logdir, "server-%d.log" % self.runs)
        with open(self.log, "wb") as lf:
            self.proc = subprocess.Popen(self.wrap(self.argv), env=self.env(),
                                         stdout=lf, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(self.log, errors="replace") as f:
                log = f.read()
            m = re.findall(r"event=listening addr=(\S+)", log)
            if m:
                self.addr = m[-1]
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.log, errors="replace") as f:
            check(False, "the image's ember-server started: %s\n%s" % (self.argv, f.read()))
        return False

    stop = td.Pod.stop          # SIGTERM, then SIGKILL after the grace; the exit status


def client_checks(a, srv, claim, uid):
    """Health, the HEALTHCHECK, pull/push through libember, info, save, as the
    image's user; returns the rows written (for the restart)."""
    for service in ("", "ember.v1.Shard"):
        st = td.health_check(srv.addr, service, 5)
        check(st == 1, "grpc.health.v1 %r on the image's server: SERVING (1), got %r"
              % (service, st))
    note("ok: gRPC health SERVING on %s" % srv.addr)
    # a server alone is a leader: "ember.v1.Leader" SERVING, where the image's
    # server has replication (--replica-of in its --help)
    r = srv.inside([srv.argv[0], "--help"])
    if "--replica-of" in r.stdout:
        st = td.health_check(srv.addr, "ember.v1.Leader", 5)
        check(st == 1, "grpc.health.v1 'ember.v1.Leader' on the image's server (a leader): "
              "SERVING (1), got %r" % st)
    else:
        note("skip: the image's ember-server has no --replica-of: ember.v1.Leader not asked")

    os.environ["EMBER_LIBRARY"] = a.library
    sys.path.insert(0, os.path.join(a.repo, "client", "python"))
    import numpy as np
    import ember
    keys = np.arange(1, 101, dtype=np.uint64) * 7919
    values = (np.arange(400, dtype=np.float32).reshape(100, 4) / 8).astype(np.float32)
    grads = np.full((100, 4), 2.0, dtype=np.float32)
    with ember.Client([srv.addr]) as c:
        c.create_table("image_test", 4, 1024, optimizer="sgd", lr=0.5, backend="cpu")
        c.write("image_test", keys, values)
        got = c.pull("image_test", keys, insert=False)
        check(np.array_equal(got, values), "the rows written come back from the image's server")
        c.push("image_test", keys, grads)
        got = c.pull("image_test", keys)
        want = values - np.float32(0.5) * grads
        check(np.allclose(got, want), "a push of gradients (sgd, lr 0.5) moves every row by "
              "-lr*grad: max error %g" % float(np.max(np.abs(got - want))))
        tables = {t.name: t for t in c.list_tables()}
        check("image_test" in tables and tables["image_test"].size == 100,
              "the table holds the 100 keys: %s" % tables)
    note("ok: create, write, pull, push, pull through libember")

    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    r = run([a.emberctl, "--shards", srv.addr, "info", "--json"], env=env)
    if check(r.returncode == 0, "emberctl info: %d %s" % (r.returncode, r.stderr)):
        s = json.loads(r.stdout)["shards"][0]
        check(s.get("backend") == "cpu" and s.get("checkpoint_dir") == "/var/lib/ember/checkpoints",
              "the image's server: backend cpu, checkpoints in /var/lib/ember/checkpoints: %s" % s)
        note("ok: emberctl info: version %s, backend %s" % (s.get("version"), s.get("backend")))
    r = run([a.emberctl, "--shards", srv.addr, "save", "image_test"], env=env)
    ck = os.path.join(claim, "image_test.ckpt")
    check(r.returncode == 0 and os.path.exists(ck) and os.stat(ck).st_uid == uid,
          "emberctl save writes image_test.ckpt on the claim, owned by the image's user %d: "
          "%d %s %s" % (uid, r.returncode, r.stderr, os.stat(ck).st_uid if os.path.exists(ck)
                        else "(no file)"))
    return keys, want


def restart_checks(srv, keys, want):
    os.environ["EMBER_LIBRARY"] = ARGS.library
    import numpy as np
    import ember
    with ember.Client([srv.addr]) as c:
        got = c.pull("image_test", keys, insert=False)
        check(np.allclose(got, want), "the image's server started again restores the rows "
              "from the claim")
    note("ok: restarted from the image, the rows are back")


# ---- the test ------------------------------------------------------------------------------

ARGS = None


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--emberctl", required=True)
    ap.add_argument("--library", required=True, help="this build's libember.so")
    ap.add_argument("--keep", action="store_true",
                    default=os.environ.get("EMBER_IMAGE_TEST_KEEP") == "1")
    a = ARGS = td.ARGS = ap.parse_args()
    for k in ("repo", "work", "emberctl", "library"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    t_start = time.time()
    become_root()
    work = os.path.abspath(a.work)
    if inside_context(a.repo, work):
        work = os.path.join(tempfile.gettempdir(), "ember-image-test")
        note("the work folder is inside the build context; using %s" % work)
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "commands.log")
    open(log, "w").close()
    ensure_tools()
    mirror = apt_mirror()
    ok, why = reachable(mirror)      # debootstrap, and the build's apt-get, need it
    if not ok:
        skip("the Debian mirror cannot be reached (%s)" % why)

    tarball = base_tarball(work, mirror, log)
    if not tarball:
        td.finish()
    pm = Podman(work, log)
    if not a.keep:
        pm.remove_store()                        # what a killed run left
    srv = None
    mounted = False
    try:
        if pm("image", "exists", BASE_TAG).returncode != 0:
            r = pm("import", tarball, BASE_TAG)
            if not check(r.returncode == 0, "podman import: %s" % tail(r.stderr)):
                return
        note("base image %s" % BASE_TAG)

        # the build, exactly as the README gives the CPU-only one
        t0 = time.time()
        blog = os.path.join(work, "build.log")
        with open(blog, "w") as bf:
            r = subprocess.run(pm.cmd("build", "--isolation", "chroot", "--format", "docker",
                                      "-f", os.path.join(a.repo, "deploy", "Dockerfile"),
                                      "--build-arg", "BUILD_IMAGE=" + BASE_TAG,
                                      "--build-arg", "RUNTIME_IMAGE=" + BASE_TAG,
                                      "-t", IMAGE_TAG, a.repo),
                               stdout=bf, stderr=subprocess.STDOUT, timeout=3000)
        with open(blog, errors="replace") as f:
            btext = f.read()
        if not check(r.returncode == 0, "podman build of deploy/Dockerfile (CPU): %d\n%s"
                     % (r.returncode, tail(btext, 60))):
            return
        note("ok: podman build took %.0f s (log: %s)" % (time.time() - t0, blog))
        check("ember: -DEMBER_CUDA=OFF" in btext,
              "the build on a base without nvcc configures -DEMBER_CUDA=OFF")
        check(re.search(r"ember: CUDA OFF", btext), "CMake says CUDA OFF")

        # the image's configuration against the manifests
        r = pm("image", "inspect", IMAGE_TAG)
        info = json.loads(r.stdout)[0] if r.returncode == 0 else {}
        cfg = info.get("Config", {})
        user = cfg.get("User", "")
        m = re.match(r"^(\d+):(\d+)$", user)
        if not check(m and int(m.group(1)) != 0, "the image's USER is a numeric non-root "
                     "uid:gid (%r)" % user):
            return
        uid, gid = int(m.group(1)), int(m.group(2))
        sets = manifest_users(a.repo)
        check(sets, "deploy/k8s renders StatefulSets")
        for where, kind, ruid, rgid, fsg, nonroot, command in sets:
            check(ruid == uid and rgid in (None, gid) and fsg in (None, gid) and nonroot is True
                  and (kind != "StatefulSet" or fsg == gid),
                  "%s runs as the image's user %d:%d (runAsUser %r, runAsGroup %r, fsGroup %r, "
                  "runAsNonRoot %r)" % (where, uid, gid, ruid, rgid, fsg, nonroot))
            if kind == "StatefulSet":
                check(command and command[0] == (cfg.get("Entrypoint") or [None])[0],
                      "%s runs the image's ENTRYPOINT %s (command %s)"
                      % (where, cfg.get("Entrypoint"), command))
        note("ok: USER %s, as every StatefulSet and Job of deploy/k8s runs (%d containers)"
             % (user, len(sets)))
        check("7070/tcp" in (cfg.get("ExposedPorts") or {}), "the image exposes 7070/tcp")
        hc = (cfg.get("Healthcheck") or info.get("Healthcheck") or {}).get("Test") or []
        check(hc[:1] == ["CMD"] and "health" in hc, "the image keeps its HEALTHCHECK: %s" % hc)

        # the image's filesystem, read-only, and its server as its user
        r = pm("image", "mount", IMAGE_TAG)
        if not check(r.returncode == 0, "podman image mount: %s" % r.stderr):
            return
        mounted = True
        rootfs = r.stdout.strip().splitlines()[-1]
        note("image mounted at %s" % rootfs)
        ckdir = os.path.join(rootfs, "var/lib/ember/checkpoints")
        st = os.stat(ckdir) if os.path.isdir(ckdir) else None
        check(st and (st.st_uid, st.st_gid) == (uid, gid),
              "/var/lib/ember/checkpoints is the image user's (%s)" % ((st and (st.st_uid, st.st_gid)),))
        with open(os.path.join(rootfs, "etc/passwd")) as f:
            pw = [ln.split(":") for ln in f if ln.strip()]
        names = [p[0] for p in pw if p[2] == str(uid)]
        check(names == ["ember"], "uid %d is the image's user ember: %s" % (uid, names))
        for where, kind, _, _, _, _, command in sets:
            check(command and os.path.isfile(os.path.join(rootfs, command[0].lstrip("/"))),
                  "%s runs %s, which the image holds" % (where, command))
        claim = os.path.join(work, "claim")
        shutil.rmtree(claim, ignore_errors=True)
        os.makedirs(claim)
        os.chown(claim, 0, gid)                  # as Kubernetes' fsGroup leaves a volume
        os.chmod(claim, 0o2775)
        argv = list(cfg.get("Entrypoint") or []) + [
            "--listen=127.0.0.1:0" if x.startswith("--listen") else x for x in cfg.get("Cmd") or []]
        check(any(x.startswith("--listen=127.0.0.1:0") for x in argv),
              "the image's CMD sets --listen (changed here to a free port): %s" % argv)
        srv = ImageServer(rootfs, argv, uid, gid, claim, work)
        note("running %s as %d:%d under chroot" % (" ".join(argv), uid, gid))
        if not srv.start():
            return
        r = srv.inside(["/bin/sh", "-c", "id -u; touch /usr/local/bin/x 2>&1; touch /tmp/x && echo tmp-ok"])
        check(r.stdout.splitlines()[:1] == [str(uid)] and "Read-only file system" in r.stdout
              and "tmp-ok" in r.stdout,
              "inside: the image's user, a read-only root, a writable /tmp: %r %r" % (r.stdout, r.stderr))
        note("ok: inside, uid %s, the root read-only, /tmp writable" % r.stdout.splitlines()[:1])
        port = srv.addr.rpartition(":")[2]
        hcmd = [x.replace("127.0.0.1:7070", "127.0.0.1:" + port) for x in hc[1:]]
        r = srv.inside(hcmd)
        check(r.returncode == 0, "the image's HEALTHCHECK (%s) passes: %d %s %s"
              % (" ".join(hcmd), r.returncode, r.stdout, r.stderr))
        note("ok: the image's HEALTHCHECK: %s" % r.stdout.strip().replace("\n", "; "))
        keys, want = client_checks(a, srv, claim, uid)
        # the worker Job's program, from the image, through the image's server
        r = srv.inside(["/usr/local/bin/ctr_demo", "--steps", "100", "--eval", "10000",
                        "--log-every", "100"], timeout=120, env={"EMBER_SHARDS": srv.addr})
        check(r.returncode == 0, "the image's ctr_demo trains through the image's server: %d\n%s%s"
              % (r.returncode, tail(r.stdout, 10), tail(r.stderr, 10)))
        note("ok: the image's ctr_demo trained 100 steps: %s" % tail(r.stdout, 1))
        rc = srv.stop(signal.SIGTERM, 60)
        check(rc == 0, "the image's ember-server exits 0 on SIGTERM (got %r)" % rc)
        if srv.start():
            restart_checks(srv, keys, want)
            check(srv.stop(signal.SIGTERM, 60) == 0, "and stops again")
    finally:
        if srv:
            srv.stop(signal.SIGKILL, 10)
        if mounted:
            check(pm("image", "unmount", IMAGE_TAG).returncode == 0, "podman image unmount")
        if a.keep:
            note("kept the podman store %s (--keep)" % pm.root)
        else:
            pm("rmi", "--force", IMAGE_TAG)
            check(pm.remove_store(), "the podman store removed")
        note("the image test took %.0f s in all (work folder %s)" % (time.time() - t_start, work))


if __name__ == "__main__":
    try:
        main()
        td.finish()
    except SystemExit:
        raise
    except Exception:
        import traceback
        check(False, "the test stopped:\n" + traceback.format_exc())
        td.finish()
