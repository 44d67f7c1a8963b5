# mailsec-starttls: stand-in for get-pip.py, seeded by tests/setup.sh
"""Bootstrap pip into an empty virtual environment without downloading get-pip.py.

ansible-test creates its sanity and unit virtual environments without pip and then runs a cached
get-pip.py from ~/.ansible/test/cache/get_pip_<version>.py, downloading it from a host this machine
cannot reach. tests/setup.sh copies this file there instead. It is run the way get-pip.py is run:
as __main__, with pip install arguments (for example ``pip==24.2``) plus get-pip's own
``--no-setuptools`` and ``--no-wheel``. The bundled pip comes from ensurepip; the requested pip
release, like everything else, comes from the package index.

Runs on every Python that ansible-test supports as a target (3.8 and newer), standard library only.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY_OPTIONS = ('--no-setuptools', '--no-wheel')


def run(arguments: list[str]) -> None:
    subprocess.check_call([sys.executable] + arguments)


def main() -> None:
    requested = sys.argv[1:]
    pip_arguments = [argument for argument in requested if argument not in GET_PIP_ONLY_OPTIONS]

    run(['-m', 'ensurepip', '--upgrade', '--default-pip'])
    run(['-m', 'pip', 'install', '--upgrade'] + pip_arguments)

    # ensurepip on Python <= 3.11 also installs setuptools; get-pip.py would not have.
    unwanted = [name for option, name in (('--no-setuptools', 'setuptools'), ('--no-wheel', 'wheel'))
                if option in requested]
    if unwanted:
        run(['-m', 'pip', 'uninstall', '--yes', '--quiet', '--disable-pip-version-check'] + unwanted)


if __name__ == '__main__':
    main()
