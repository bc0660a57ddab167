"""Two hosts over a real network: two network namespaces of this machine,
each with a network stack of its own, joined by a veth pair (addresses of
the test's own, 10.X.Y.1 and 10.X.Y.2), one ``tools/dist_train.sh`` per
namespace with ``NNODES=2``, ``NODE_RANK`` and ``MASTER_ADDR`` set to the
first one's address, one process each.  The final weights equal those of
one host's two-process run, every float tensor.  Needs root (``ip netns``);
skipped (with the reason) where namespaces cannot be made, and never
skipped under ``.ci/run``."""
import json
import os
import os.path as osp
import shutil
import signal
import subprocess

import pytest

from distributed_runs import (FINAL, assert_same_weights, cannot_run, kill_all,
                              reference, run_env, start, tail, tool, workspace)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: the interface of each host towards the other (a name of its namespace)
LINK = 'gcnet0'


def _ip(*args, check=True):
    return subprocess.run(['ip', *args], capture_output=True, text=True,
                          check=check)


def _remove(namespaces):
    """Kill what still runs in the namespaces, then delete them."""
    for ns in namespaces:
        pids = _ip('netns', 'pids', ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        _ip('netns', 'del', ns, check=False)


@pytest.fixture
def two_hosts():
    """[(namespace, address)] of two hosts joined by a veth pair."""
    if os.geteuid() != 0 or not shutil.which('ip'):
        cannot_run('network namespaces need root and iproute2 (ip)')
    tag = f'{os.getpid() % 65536:04x}'
    subnet = f'10.{200 + os.getpid() % 50}.{os.getpid() % 250}'
    hosts = [(f'gcnet-{tag}-{i}', f'{subnet}.{i + 1}') for i in range(2)]
    made = []
    try:
        for ns, _ in hosts:
            proc = _ip('netns', 'add', ns, check=False)
            if proc.returncode != 0:
                cannot_run(f'cannot make a network namespace: {proc.stderr}')
            made.append(ns)
        (a, _), (b, _) = hosts
        _ip('link', 'add', LINK, 'netns', a, 'type', 'veth', 'peer', 'name',
            LINK, 'netns', b)
        for ns, addr in hosts:
            _ip('-n', ns, 'addr', 'add', f'{addr}/24', 'dev', LINK)
            _ip('-n', ns, 'link', 'set', 'lo', 'up')
            _ip('-n', ns, 'link', 'set', LINK, 'up')
        yield hosts
    finally:
        _remove(made)


def test_two_hosts_train_as_one_host_with_two_processes(
        two_hosts, tmp_path_factory):
    ws = workspace(tmp_path_factory)
    ref = reference(tmp_path_factory)
    (_, master), _ = two_hosts
    port = '29500'  # each namespace has ports of its own
    procs, logs, work_dirs = [], [], []
    try:
        for rank, (ns, _) in enumerate(two_hosts):
            work_dir = osp.join(ws, f'host{rank}-{os.getpid()}')
            log = work_dir + '.log'
            # gloo's address is that of GLOO_SOCKET_IFNAME (by default the
            # one the host name resolves to, here 127.0.0.1)
            env = run_env(NNODES=2, NODE_RANK=rank, MASTER_ADDR=master,
                          PORT=port, GLOO_SOCKET_IFNAME=LINK)
            procs.append(start(
                ['ip', 'netns', 'exec', ns, 'bash', tool('dist_train.sh'),
                 'seg.py', '1', '--work-dir', work_dir], ws, env, log))
            logs.append(log)
            work_dirs.append(work_dir)
        for proc, log in zip(procs, logs):
            assert proc.wait(500) == 0, tail(log)
    finally:
        for work_dir in work_dirs:
            kill_all(work_dir)
    # the gradients crossed the link: megabytes each way
    for ns, _ in two_hosts:
        stats = json.loads(_ip('-n', ns, '-s', '-j', 'link', 'show',
                               LINK).stdout)[0]['stats64']
        print(f'{ns} received {stats["rx"]["bytes"]} bytes over {LINK}')
        assert stats['rx']['bytes'] > 10 ** 6, stats
    # only rank 0 (the first host) saves checkpoints
    assert not osp.exists(osp.join(work_dirs[1], FINAL))
    assert 'Distributed training: True' in tail(logs[0], 10 ** 6)
    assert_same_weights(osp.join(work_dirs[0], FINAL), ref)
