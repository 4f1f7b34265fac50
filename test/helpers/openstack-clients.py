"""Runs Debian's `cinder` and `openstack` commands, each in a process of its own,
forked from one that imported the clients once.

A command is what /usr/bin/cinder and /usr/bin/openstack do, `sys.exit(main())`,
with its own argv, environment, stdout and stderr, in a fresh fork: the clients
keep state in their modules (openstackclient caches each API client on the
ClientManager class and deletes from a module's version table when it makes
one), so a second command in the same process would not start as the real
one does. Forking saves the interpreter's start and the imports, about 1.1 s
of CPU a command on the test VM.

Requests come as JSON lines on stdin ({"command", "args", "env"}); each answer
({"code", "stdout", "stderr"}) is one JSON line on fd 3.
"""
import json
import os
import sys
import tempfile
import traceback

import cinderclient.shell
import openstackclient.shell

MAINS = {'cinder': cinderclient.shell.main, 'openstack': openstackclient.shell.main}


def child(request, out, err):
    """Runs the command in the forked child; never returns."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(3)
        os.environ.clear()
        os.environ.update(request['env'])
        sys.argv = [request['command']] + request['args']
        try:
            code = MAINS[request['command']]()
        except SystemExit as e:
            code = e.code
        if isinstance(code, str):  # sys.exit("message"): the interpreter prints it and exits 1
            print(code, file=sys.stderr)
            code = 1
        code = code or 0
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def run(request):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            child(request, out.fileno(), err.fileno())
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return {
            'code': os.waitstatus_to_exitcode(status),
            'stdout': out.read().decode('utf-8', 'replace'),
            'stderr': err.read().decode('utf-8', 'replace'),
        }


with os.fdopen(3, 'w') as answers:
    for line in sys.stdin:
        answers.write(json.dumps(run(json.loads(line))) + '\n')
        answers.flush()
