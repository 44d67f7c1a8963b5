# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every documented example, run as written: each fenced block of README.md, docs/*.md and roles/*/README.md
and the EXAMPLES of every plugin are collected when the tests are collected (an example added later is run
without editing this file), told apart by their shape, and run against the real-MTA lab (tests/lab) with real
ansible-playbook, ansible and bash:

- YAML task lists (module and filter EXAMPLES, task snippets in the guides): in one playbook per source file,
  each example in a block of its own, after CONTEXT tasks that give them the variables the docs name
  (`starttls_host`, `starttls_report`, ...) from the lab;
- YAML playbooks, inventories, host entries and variable files: through the audit playbook, on the example
  inventory mapped to the lab (MAPPING below);
- shell blocks: through bash in a scratch checkout whose inventory files are the example inventory mapped to
  the lab;
- CI definitions: parsed, every command they call found, every ansible-playbook line syntax-checked
  (NOT_RUNNABLE says why no more);
- ```text blocks are output and diagrams, shown, not run.

A block of another language, a YAML block of a shape nobody runs, or a documentation address the mapping does
not know fails its test: it must be given a way to run here (or be fixed), never skipped.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ansible_bin

# -- where the examples are -------------------------------------------------------------------------------

MARKDOWN_SOURCES = ('README.md', 'docs/*.md', 'roles/*/README.md')
PLUGIN_SOURCES = ('plugins/modules/*.py', 'plugins/filter/*.py', 'plugins/filter/*.yml', 'plugins/action/*.py')
FENCE = re.compile(r'^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[^\s`]*)')


@dataclass(frozen=True)
class Example:
    path: str
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f'{self.path}:{self.line}'


def markdown_examples(path: Path) -> list:
    found, lines, index = [], path.read_text().splitlines(), 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, body = len(opening['indent']), opening['fence'], []
        start, index = index + 1, index + 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:] if lines[index][:indent].strip() == '' else lines[index])
            index += 1
        found.append(Example(str(path.relative_to(REPO)), start, opening['lang'].lower(), '\n'.join(body) + '\n'))
        index += 1
    return found


def plugin_examples(path: Path) -> list:
    if path.suffix == '.yml':
        text = path.read_text()
        examples = (yaml.safe_load(text) or {}).get('EXAMPLES')
        line = next((number for number, content in enumerate(text.splitlines(), 1) if content.startswith('EXAMPLES')), 1)
    else:
        examples, line = None, 1
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(target, 'id', None) == 'EXAMPLES' for target in node.targets):
                examples, line = ast.literal_eval(node.value), node.lineno
    if not examples or not str(examples).strip():
        return []
    return [Example(str(path.relative_to(REPO)), line, 'yaml', str(examples))]


def collect_examples() -> list:
    examples = []
    for pattern in MARKDOWN_SOURCES:
        for path in sorted(REPO.glob(pattern)):
            examples.extend(markdown_examples(path))
    for pattern in PLUGIN_SOURCES:
        for path in sorted(REPO.glob(pattern)):
            examples.extend(plugin_examples(path))
    return examples


EXAMPLES = collect_examples()


def kind_of(example: Example) -> str:
    """What the example is, from its language tag and, for YAML, its shape."""
    if example.lang == 'text':
        return 'output'
    if example.lang in ('sh', 'bash', 'shell'):
        return 'shell'
    if example.lang not in ('yaml', 'yml'):
        return f'unknown: a block tagged {example.lang!r} (tag it sh, yaml or text)'
    document = yaml.safe_load(example.text)
    if isinstance(document, dict) and ('jobs' in document or any(
            isinstance(value, dict) and 'script' in value for value in document.values())):
        return 'ci'
    if isinstance(document, list) and document and all(isinstance(item, dict) for item in document):
        return 'playbook' if all('hosts' in item for item in document) else 'tasks'
    if isinstance(document, dict) and document and all(str(key).startswith('starttls_') for key in document):
        return 'variables'
    if isinstance(document, dict) and set(document) == {'all'}:
        return 'inventory'
    if isinstance(document, dict) and document and all(isinstance(value, dict) for value in document.values()):
        return 'hosts'
    return 'unknown: a YAML block that is no task list, playbook, inventory, host entry, variable file or CI file'


RUNNABLE = [example for example in EXAMPLES if kind_of(example) != 'output']

# -- the mapping: documentation names and addresses -> the lab --------------------------------------------

# Example text -> what it means in the lab (applied to every example and every inventory file, longest first).
# {root} is the lab's root, {work} this module's scratch directory. An RFC 5737 / RFC 3849 address that is not
# listed here fails the example (the docs use them for hosts that do not exist; the tests talk to loopback only).
MAPPING = {
    # addresses
    '192.0.2.25': '127.0.60.1',         # a mail host: the demo host (Postfix 25 and 587, Dovecot 143 and 993)
    '192.0.2.40': '127.0.60.1',         # exchange01, black-box
    '192.0.2.143': '127.0.60.1',        # Dovecot's IMAP on one address (a local block)
    '192.0.2.26': '127.0.40.6',         # an OpenSMTPD listener without a certificate (mta_tls_config EXAMPLES)
    '192.0.2.53': '127.0.99.53',        # a resolver: the lab's resolver address, where nothing answers
    '198.51.100.5': '127.0.10.1',       # mx1 behind NAT ...
    '203.0.113.25': '127.0.10.1',       # ... and its public address (transparent here)
    '198.51.100.20': '127.0.10.5',      # a backend behind HAProxy
    '198.51.100.10': '127.0.60.1',      # HAProxy in front of Dovecot
    '198.51.100.11': '127.0.10.1',      # load-balanced backends ...
    '198.51.100.12': '127.0.10.5',
    '198.51.100.25': '127.0.60.1',      # ... their shared address; the partner MX
    '198.51.100.7': '127.0.0.1',        # a vantage host outside the firewall: this machine
    '2001:db8::25': '::1',              # an IPv6 listener: loopback (nothing listens there; the probe says so)
    # names and paths
    'mx.example.org:25': '127.0.11.1:25',                             # HAProxy's front end, resolved: an address
    '/etc/ssl/mail/mx.example.org.crt': '{root}/certs/postfix-b.crt',
    '/etc/ssl/private/mx.example.org.key': '{root}/certs/postfix-b.key',
    '/etc/ssl/mail/imap.example.org.crt': '{root}/certs/demo.crt',
    '/etc/ssl/private/imap.example.org.key': '{root}/certs/demo.key',
    'mx.example.org': 'mail-b.lab.test',                              # the name in postfix-b's certificate
    'mail.example.org': 'mail.lab.test',                              # the name in the demo host's certificate
    '/etc/postfix-out': '{root}/postfix-b/conf',                      # a second Postfix instance
    '/srv/postfix-out': '{root}/postfix-b/conf',
    # the lab runs four Dovecot instances (a host has one); the demo host's serves this address
    '    address: 192.0.2.143\n': '    instance: mailsec-lab-dovecot-demo\n    address: 127.0.60.1\n',
    'instance: postfix\n': 'instance: postfix-demo\n',                # the lab names its default-like instance so
    'service: submission': 'service: 127.0.11.1:submission',          # postfix-b's submission service
    '/tmp/mailsec-demo': '{root}',                                    # the demo host is the lab's demo instance
    '/srv/starttls-reports': '{work}/srv/starttls-reports',
    '/srv/audit/starttls': '{work}/srv/audit/starttls',
    '/tmp/starttls-reports': '{work}/tmp/starttls-reports',
}
DOCUMENTATION_ADDRESS = re.compile(r'(?<![\w.:])(?:192\.0\.2|198\.51\.100|203\.0\.113)\.\d{1,3}(?![\w.])|2001:db8:[0-9a-f:]*')
# Inventory hosts of the examples: this machine over the local connection, in the lab's network namespace, at
# the lab address given here (unless the example gives an ansible_host); every other name gets no address.
LAB_HOSTS = {
    'mx1.example.org': '127.0.60.1',
    'mx2.example.org': '127.0.11.1',
    'legacy-relay.example.org': '127.0.10.1',
}
# What every example host gets besides: the machine has no sudo, root becomes root with su.
HOST_DEFAULTS = {'ansible_connection': 'local', 'ansible_become_method': 'su'}
# The examples' jump host: the suite's sshd (conftest.sshd), whatever user and key the example names.
JUMP_HOSTS = ('bastion.example.org',)
# Variables AWX gives a job.
EXTERNAL_VARIABLES = {'awx_job_id': 4711}
# Inventory files the shell examples name, in their scratch checkout: (the inventory it is made of, groups added,
# variables added for all). The audit's: the example inventory, for docs/fleet.md's batches with its hosts in the
# groups that loop names. The remediation's (`-i inventory`): the demo host's, limited to its listeners as
# `bash demo/run.sh remediate` limits it (every host here sees every lab listener, the other MTAs' too).
INVENTORY_FILES = {
    'inventory.yml': ('docs/examples/inventory.yml', {}, {}),
    'fleet.yml': ('docs/examples/inventory.yml', {'mx-eu': ['mx1.example.org'], 'mx-us': ['mx2.example.org'],
                                                  'relays': ['legacy-relay.example.org']}, {}),
    'inventory': ('demo/inventory.yml', {}, {'starttls_remediate_listeners': [{'address': '127.0.60.1'}]}),
}

# Commands run elsewhere, by the file named (which must run them): running them here would recurse into this suite,
# build and install the collection beside the one under test, or start and stop the machine-wide demo host.
RUN_ELSEWHERE = {
    'bash demo/run.sh remediate': '.ci/run',
    'bash demo/run.sh stop': '.ci/run',
    'bash demo/run.sh': '.ci/run',
    'bash tests/run.sh': '.ci/run',
    'ansible-galaxy collection build': 'tests/integration/test_packaging.py',
    'ansible-galaxy collection install mailsec-starttls-*.tar.gz': 'tests/integration/test_packaging.py',
    'python tests/lib/docsite.py': 'tests/integration/test_tooling.py',
}
# Shell lines that set up the environment: here the test's own (this checkout's collection, the test venv first).
ENVIRONMENT_LINES = ('eval "$(bash demo/run.sh env)"',)
# Examples that change the MTAs' configuration, run in check mode (each with the reason). The remediation runs for
# real in .ci/run (`bash demo/run.sh remediate`) and tests/integration/test_remediate.py.
CHECK_MODE = {
    'mailsec.starttls.remediate': 'remediates every listener of the shared lab that a later test module reads',
    'plugins/modules/mta_tls_config.py': 'edits the configuration of the shared lab that a later test module reads',
}
# Examples that need what this machine cannot give: checked as far as they can be.
NOT_RUNNABLE = {
    'ci': 'a GitHub Actions workflow or a GitLab CI job needs their runners and Galaxy; the YAML parses, every '
          'command is found and every ansible-playbook line syntax-checks against the mapped inventory',
}
# What an example takes for granted, made here before it runs: a merge example (its text names report_merge) merges
# the partial reports of slices run before it; the one written by CONTEXT_TASKS is put into its report directory.
PRECONDITIONS = {'report_merge': 'partial reports in the report directory'}
# The documented outcome of an audit of the lab (which has faults on purpose): the policy fails the run.
POLICY_FAILURES = ('STARTTLS audit failed (policy)', 'unwaived finding(s) of severity critical or high')


def mapped(text: str, lab: dict, work: Path) -> str:
    for original in sorted(MAPPING, key=len, reverse=True):
        text = text.replace(original, MAPPING[original].format(root=lab['root'], work=work))
    unknown = sorted(set(DOCUMENTATION_ADDRESS.findall(text)))
    if unknown:
        pytest.fail(f'documentation address(es) {unknown} have no lab counterpart: add them to MAPPING')
    return text


def map_jump_hosts(document, sshd: dict):
    if isinstance(document, dict):
        if document.get('host') in JUMP_HOSTS:
            return dict(document, **sshd)
        return {key: map_jump_hosts(value, sshd) for key, value in document.items()}
    if isinstance(document, list):
        return [map_jump_hosts(item, sshd) for item in document]
    return document


def lab_host(name: str, variables: dict | None, lab: dict) -> dict:
    host = dict(HOST_DEFAULTS, ansible_python_interpreter=os.environ.get('MAILSEC_IT_PYTHON') or sys.executable,
                starttls_ca_file=f"{lab['root']}/certs/lab-ca.crt",
                starttls_probe_options={'timeout': 5, 'deadline': 20})
    if name in LAB_HOSTS:
        host['ansible_host'] = LAB_HOSTS[name]
    host.update(variables or {})
    return host


def lab_inventory(document: dict, lab: dict, sshd: dict, groups: dict | None = None, variables: dict | None = None) -> dict:
    """An example inventory (YAML, `all:` at the top) with every host mapped to the lab."""
    def walk(group: dict) -> dict:
        group = dict(group or {})
        if group.get('hosts'):
            group['hosts'] = {name: lab_host(name, variables, lab) for name, variables in group['hosts'].items()}
        if group.get('children'):
            group['children'] = {name: walk(child) for name, child in group['children'].items()}
        return group
    inventory = {'all': walk(map_jump_hosts(document['all'], sshd))}
    if groups:
        inventory['all'].setdefault('children', {}).update(
            {name: {'hosts': {host: {} for host in hosts}} for name, hosts in groups.items()})
    if variables:
        inventory['all'].setdefault('vars', {}).update(variables)
    return inventory


# -- running ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def example_inventory(lab, sshd, work) -> str:
    document = yaml.safe_load(mapped((REPO / 'docs' / 'examples' / 'inventory.yml').read_text(), lab, work))
    path = work / 'example-inventory.json'
    path.write_text(json.dumps(lab_inventory(document, lab, sshd)))
    return str(path)


@pytest.fixture(scope='module')
def checkout(lab, sshd, work) -> Path:
    """A scratch checkout for the shell examples: the repository's files, the demo inventory and the example
    inventory files mapped to the lab; what the examples write lands here."""
    root = work / 'checkout'
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ('demo', '.git') and not entry.name.startswith('.'):
            (root / entry.name).symlink_to(entry)
    (root / 'demo').mkdir()
    for entry in (REPO / 'demo').iterdir():
        if entry.name != 'inventory.yml':
            (root / 'demo' / entry.name).symlink_to(entry)
    demo = yaml.safe_load(mapped((REPO / 'demo' / 'inventory.yml').read_text(), lab, work))
    (root / 'demo' / 'inventory.yml').write_text(json.dumps(lab_inventory(demo, lab, sshd)))
    for name, (source, groups, variables) in INVENTORY_FILES.items():
        document = yaml.safe_load(mapped((REPO / source).read_text(), lab, work))
        (root / name).write_text(json.dumps(lab_inventory(document, lab, sshd, groups, variables)))
    return root


@pytest.fixture(scope='module')
def shell_env(ansible_env) -> dict:
    env = dict(ansible_env, PATH=f'{Path(ansible_bin("ansible-playbook")).parent}:{ansible_env["PATH"]}',
               PIP_NO_INDEX='1', ANSIBLE_HOST_KEY_CHECKING='0')
    return env


def assert_audit_outcome(output: str, statuses: list):
    """Every failure is the documented policy failure of an audit of the lab; nothing else failed."""
    problems = [line for line in output.splitlines()
                if line.startswith(('fatal:', 'ERROR!', '[ERROR]')) and not any(text in line for text in POLICY_FAILURES)]
    problems += [line for line in output.splitlines() if 'UNREACHABLE!' in line or 'STARTTLS audit error' in line]
    assert not problems, '\n'.join(problems) + '\n' + output[-6000:]
    assert all(status == 2 for status in statuses), (statuses, output[-6000:])
    if statuses:
        assert any(text in output for text in POLICY_FAILURES), output[-6000:]


def logical_lines(text: str) -> list:
    lines, current = [], ''
    for line in text.splitlines():
        current += line
        if current.endswith('\\'):
            current = current[:-1] + ' '
            continue
        lines.append(current)
        current = ''
    return lines


def prepared_script(example: Example) -> tuple:
    """The block with the lines run elsewhere or given by the environment taken out (each checked), and the
    remediation in check mode."""
    kept, skipped, lines = [], [], logical_lines(example.text)
    for line in lines:
        command = re.sub(r'\s+#.*$', '', line).strip()
        if command in ENVIRONMENT_LINES:
            skipped.append((command, None))
            continue
        elsewhere = next((prefix for prefix in sorted(RUN_ELSEWHERE, key=len, reverse=True)
                          if command == prefix or command.startswith(prefix + ' ')), None)
        if elsewhere:
            skipped.append((command, RUN_ELSEWHERE[elsewhere]))
            continue
        marker = next((marker for marker in CHECK_MODE if marker in command and command.startswith('ansible-playbook')
                       and '--check' not in command), None)
        if marker and any(marker in other and '--check' in other for other in lines):
            skipped.append((command, None))  # CHECK_MODE: the block's own check-mode line runs it
            continue
        kept.append(f'{command} --check' if marker else command)
    return '\n'.join(kept) + '\n', skipped


def check_run_elsewhere(skipped: list):
    for command, where in skipped:
        if where is None:
            continue
        source = (REPO / where).read_text()
        assert all(word in source for word in command.split()[:3]), f'{where} does not run {command!r}'


PASSED_SCRIPTS: set = set()  # the same commands in several files (README, docs/, role READMEs) run once


def run_shell(example: Example, lab, work, checkout, shell_env):
    script, skipped = prepared_script(example)
    check_run_elsewhere(skipped)
    script = mapped(script, lab, work)
    if not script.strip() or script in PASSED_SCRIPTS:
        return
    if 'report_merge' in script:
        stash = work / 'partials'
        target = Path(mapped('/srv/starttls-reports', lab, work))
        target.mkdir(parents=True, exist_ok=True)
        for partial in stash.glob('*.json'):
            shutil.copy2(partial, target / partial.name)
    # Each failing command reports its status; an audit of the lab fails by its policy (exit 2), as documented.
    traced = "trap 'echo \"EXAMPLE-STATUS $? $BASH_COMMAND\" >&2' ERR\n" + script + 'wait\n'
    completed = subprocess.run(['bash', '-c', traced], cwd=checkout, env=shell_env, capture_output=True, text=True,
                               timeout=900, check=False)
    output = completed.stdout + completed.stderr
    statuses = [int(match) for match in re.findall(r'^EXAMPLE-STATUS (\d+)', completed.stderr, re.MULTILINE)]
    if completed.returncode not in (0, 2):
        statuses.append(completed.returncode)
    for log in checkout.glob('*.log'):  # what a command sent to the background wrote
        output += log.read_text()
    assert_audit_outcome(output, statuses)
    assert 'PLAY RECAP' in output or 'SUCCESS' in output or 'Requirement already satisfied' in output, output[-4000:]
    PASSED_SCRIPTS.add(script)


def run_audit_with(inventory: str, variables: str | None, shell_env, work: Path) -> str:
    """The audit playbook on an inventory, with a variable file (`-e @FILE`) when given."""
    report_dir = work / 'reports-variables'
    completed = subprocess.run([ansible_bin('ansible-playbook'), '-i', inventory, 'mailsec.starttls.audit',
                                '-e', json.dumps(dict({'starttls_report_dir': str(report_dir)}, **EXTERNAL_VARIABLES)),
                                *(['-e', f'@{variables}'] if variables else [])],
                               env=shell_env, capture_output=True, text=True, timeout=900, check=False)
    output = completed.stdout + completed.stderr
    assert_audit_outcome(output, [completed.returncode] if completed.returncode else [])
    assert 'PLAY RECAP' in output, output[-4000:]
    return output


def task_group(example: Example) -> str:
    """Task examples run in one playbook per directory: the modules' examples register what the filters'
    examples take from CONTEXT_TASKS (`patch`), so they do not share a run."""
    return str(Path(example.path).parent)


CONTEXT_TASKS = """
- name: CONTEXT | starttls_host, the host's evidence (mta_tls_info on the lab)
  mailsec.starttls.mta_tls_info:
    host: "{{ inventory_hostname }}"
    ca_file: "{{ starttls_ca_file }}"
  register: starttls_host
- name: CONTEXT | starttls_probes, the controller's probes of the demo host
  mailsec.starttls.listener_probe:
    targets: [127.0.60.1:25, 127.0.60.1:587, 127.0.60.1:143/imap]
    ca_file: "{{ starttls_ca_file }}"
    vantage: controller
  delegate_to: localhost
  register: starttls_probes
- name: CONTEXT | The judgement of both, as the filters and the remediation examples name it
  ansible.builtin.set_fact:
    starttls_report: "{{ [starttls_host] | mailsec.starttls.report(starttls_probes) }}"
    starttls_findings: "{{ [starttls_host] | mailsec.starttls.findings(starttls_probes) }}"
- name: CONTEXT | The audit's result, the remediation plan and its inputs
  ansible.builtin.set_fact:
    starttls_audit: "{{ starttls_report }}"
    before: "{{ starttls_report.findings }}"
    after: []  # the judgement after a change that fixed everything
    actions: "{{ starttls_report.findings | mailsec.starttls.remediation_plan(starttls_host, inventory_hostname,
                 [], 'auto') }}"
    patch: {results: []}
- name: CONTEXT | The report directory, as the audit role makes it
  ansible.builtin.file:
    path: "{{ starttls_report_dir }}"
    state: directory
    mode: "0755"
  delegate_to: localhost
- name: CONTEXT | A partial report of one slice, for the merge examples (PRECONDITIONS)
  mailsec.starttls.fleet_assess:
    report_dir: "{{ starttls_partial_stash }}"
    partial: true
    controller_probe: false
  run_once: true
- name: CONTEXT | The slice's partial report in the merge examples' report directory
  ansible.builtin.copy:
    src: "{{ starttls_partial_stash }}/"
    dest: "{{ starttls_merge_dir }}/"
    mode: preserve
  delegate_to: localhost
"""


@pytest.fixture(scope='module')
def task_outcomes(lab, sshd, work, example_inventory, shell_env):
    """Runs the task-list examples of one TASK_GROUPS group in one playbook, once: each example in a block whose
    rescue records its failure, after the CONTEXT tasks."""
    cache: dict = {}

    def run(directory: str) -> dict:
        if directory in cache:
            return cache[directory]
        examples = [example for example in RUNNABLE if kind_of(example) == 'tasks' and task_group(example) == directory]
        name = directory.replace('/', '_') or 'top'
        result_file = work / f'{name}.result.json'
        blocks = []
        for example in examples:
            tasks = map_jump_hosts(yaml.safe_load(mapped(example.text, lab, work)), sshd)
            block = {'name': f'EXAMPLE {example.id}', 'block': tasks + [
                {'name': 'EXAMPLE | ran', 'ansible.builtin.set_fact': {
                    'example_outcomes': f'{{{{ example_outcomes | combine({{{example.id!r}: "ran"}}) }}}}'}}],
                'rescue': [{'name': 'EXAMPLE | record the failure', 'ansible.builtin.set_fact': {
                    'example_outcomes': f'{{{{ example_outcomes | combine({{{example.id!r}: '
                                        f'ansible_failed_result.msg | default("failed") | string}}) }}}}'}}]}
            if example.path in CHECK_MODE:
                block['check_mode'] = True
            blocks.append(block)
        blocks.append({'name': 'EXAMPLE | outcomes', 'ansible.builtin.copy': {
            'dest': str(result_file), 'content': '{{ example_outcomes | to_json }}', 'mode': '0644'},
            'delegate_to': 'localhost', 'check_mode': False})
        play = [{'name': 'the task examples', 'hosts': 'mx1.example.org', 'gather_facts': False,
                 # the lab's OpenSMTPD is unpacked, not installed (its package conflicts with Postfix's): its smtpd
                 # validates the mta_tls_config examples' candidates, as binaries.smtpd names it on such a host
                 'module_defaults': {'mailsec.starttls.mta_tls_config': {'binaries': {
                     'smtpd': f"{lab.get('pkgroot') or '/opt/mailsec-lab/root'}/usr/sbin/smtpd"}}},
                 'vars': {'example_outcomes': {}, 'starttls_report_dir': str(work / 'starttls-reports'),
                          'starttls_merge_dir': mapped('/srv/starttls-reports', lab, work),
                          'starttls_partial_stash': str(work / 'partials'),
                          'starttls_certificates': [],
                          # a play variable, so that it is not in hostvars, where fleet_assess reads the black-box
                          # listeners of the same name
                          'starttls_listeners': '{{ [starttls_host] }}'},
                 'tasks': yaml.safe_load(CONTEXT_TASKS) + blocks}]
        playbook = work / f'{name}.playbook.yml'
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        completed = subprocess.run([ansible_bin('ansible-playbook'), '-i', example_inventory, str(playbook),
                                    '-e', json.dumps(EXTERNAL_VARIABLES)], cwd=work,
                                   env=shell_env, capture_output=True, text=True, timeout=900, check=False)
        output = completed.stdout + completed.stderr
        assert result_file.exists(), output[-6000:]
        cache[directory] = {'outcomes': json.loads(result_file.read_text()), 'output': output}
        return cache[directory]

    return run


def check_ci(example: Example, lab, work, checkout, shell_env):
    """A CI definition: the commands it runs exist, the playbook lines syntax-check against the mapped inventory."""
    document = yaml.safe_load(example.text)
    commands = []
    for job in ([document['jobs']] if 'jobs' in document else [document]):
        for value in job.values():
            if not isinstance(value, dict):
                continue
            for step in value.get('steps') or []:
                commands += logical_lines(step.get('run') or '')
            commands += [line for item in value.get('script') or [] for line in logical_lines(item)]
    assert commands, example.text
    for command in filter(None, (line.strip() for line in commands)):
        argv = shlex.split(mapped(command, lab, work))
        assert shutil.which(argv[0], path=shell_env['PATH']), f'{argv[0]} not found'
        if argv[0] == 'ansible-playbook':
            completed = subprocess.run(argv + ['--syntax-check'], cwd=checkout, env=shell_env, capture_output=True,
                                       text=True, timeout=300, check=False)
            assert completed.returncode == 0, completed.stdout + completed.stderr
        elif argv[:3] == ['ansible-galaxy', 'collection', 'install']:
            completed = subprocess.run(argv[:3] + ['--help'], env=shell_env, capture_output=True, text=True, check=False)
            assert completed.returncode == 0 and '--offline' in completed.stdout, completed.stdout
        elif argv[:2] == ['pip', 'install']:
            assert all(shutil.which('pip', path=shell_env['PATH']) for _word in argv[2:])


# -- the tests ----------------------------------------------------------------------------------------------

def test_the_examples_are_collected():
    """Every source holds the examples the docs promise, and each is of a shape this module runs."""
    sources = {example.path for example in RUNNABLE}
    for expected in ('README.md', 'docs/ci.md', 'docs/fleet.md', 'roles/audit/README.md',
                     'plugins/modules/listener_probe.py', 'plugins/filter/report.yml'):
        assert expected in sources, sorted(sources)
    unknown = [f'{example.id}: {kind_of(example)}' for example in EXAMPLES if kind_of(example).startswith('unknown')]
    assert not unknown, unknown


@pytest.mark.parametrize('example', RUNNABLE, ids=[example.id for example in RUNNABLE])
def test_example(example, request):
    kind = kind_of(example)
    if kind.startswith('unknown'):
        pytest.fail(f'{example.id}: {kind}')
    lab, work = request.getfixturevalue('lab'), request.getfixturevalue('work')
    if kind == 'tasks':
        result = request.getfixturevalue('task_outcomes')(task_group(example))
        outcome = result['outcomes'].get(example.id)
        assert outcome is not None, f'{example.id} did not run\n' + result['output'][-6000:]
        assert outcome == 'ran' or any(text in outcome for text in POLICY_FAILURES), \
            f'{example.id}: {outcome}\n' + result['output'][-6000:]
    elif kind == 'shell':
        if 'report_merge' in example.text:
            request.getfixturevalue('task_outcomes')('plugins/modules')  # PRECONDITIONS: writes the partial report
        run_shell(example, lab, work, request.getfixturevalue('checkout'), request.getfixturevalue('shell_env'))
    elif kind == 'ci':
        assert kind in NOT_RUNNABLE
        check_ci(example, lab, work, request.getfixturevalue('checkout'), request.getfixturevalue('shell_env'))
    elif kind == 'playbook':
        sshd = request.getfixturevalue('sshd')
        playbook = work / f'{example.path.replace("/", "_")}-{example.line}.yml'
        playbook.write_text(yaml.safe_dump(map_jump_hosts(yaml.safe_load(mapped(example.text, lab, work)), sshd)))
        completed = subprocess.run([ansible_bin('ansible-playbook'), '-i', request.getfixturevalue('example_inventory'),
                                    str(playbook)], env=request.getfixturevalue('shell_env'),
                                   capture_output=True, text=True, timeout=900, check=False)
        output = completed.stdout + completed.stderr
        assert_audit_outcome(output, [completed.returncode] if completed.returncode else [])
        assert 'PLAY RECAP' in output, output[-4000:]
    elif kind == 'variables':
        variables = work / f'{example.path.replace("/", "_")}-{example.line}.vars.yml'
        variables.write_text(mapped(example.text, lab, work))
        run_audit_with(request.getfixturevalue('example_inventory'), str(variables), request.getfixturevalue('shell_env'),
                       work)
    elif kind in ('hosts', 'inventory'):
        sshd = request.getfixturevalue('sshd')
        document = yaml.safe_load(mapped(example.text, lab, work))
        inventory = lab_inventory(document if kind == 'inventory' else {'all': {'hosts': document}}, lab, sshd)
        path = work / f'{example.path.replace("/", "_")}-{example.line}.inventory.json'
        path.write_text(json.dumps(inventory))
        run_audit_with(str(path), None, request.getfixturevalue('shell_env'), work)
    else:
        pytest.fail(f'{example.id}: no way to run an example of kind {kind}')


def test_the_example_inventory_puts_every_host_under_the_documented_pattern(ansible_env):
    """docs/quickstart.md runs the audit with -e starttls_target=mail: every host of the example must be in it,
    black-box ones included, and no report directory may contradict the quick start's ./starttls-reports."""
    source = str(REPO / 'docs' / 'examples' / 'inventory.yml')
    completed = subprocess.run([ansible_bin('ansible-inventory'), '-i', source, '--list'], env=ansible_env,
                               capture_output=True, text=True, check=True)
    hostvars = json.loads(completed.stdout)['_meta']['hostvars']
    pattern = subprocess.run([ansible_bin('ansible'), '-i', source, 'mail', '--list-hosts'], env=ansible_env,
                             capture_output=True, text=True, check=True)
    in_mail = {line.strip() for line in pattern.stdout.splitlines()[1:] if line.strip()}
    assert in_mail == set(hostvars), (in_mail, set(hostvars))
    black_box = {host for host, variables in hostvars.items() if variables.get('starttls_host_inspection') is False}
    assert black_box == {'partner-mx.example.net', 'exchange01.example.org'}
    assert all(hostvars[host].get('starttls_listeners') for host in black_box)
    assert not any('starttls_report_dir' in variables for variables in hostvars.values())
    quickstart = (REPO / 'docs' / 'quickstart.md').read_text()
    assert '-e starttls_target=mail' in quickstart and 'starttls-reports/starttls-report.html' in quickstart
