#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mta_tls_config
short_description: Declare the TLS state of one mail listener, with the MTA's own editor and validator
version_added: 0.1.0
description:
  - Makes one listener of one MTA instance offer STARTTLS with a certificate bound to exactly its address and
    port, or stop advertising STARTTLS on that listener alone; binds a certificate to an implicit-TLS listener,
    or disables it when asked in so many words.
  - The listener is selected the way M(mailsec.starttls.mta_tls_info) reports it (O(mta), O(instance), and
    O(address)/O(port) or O(service)).
  - Postfix gets a C(master.cf) C(-o) override on that listener's service, written by C(postconf -c STAGED -P) on
    a staged copy of the instance's configuration directory; every instance is addressed by its own directory.
    Dovecot gets settings in a C(local ADDRESS) block (C(ssl = no), or C(ssl_cert = <FILE) and
    C(ssl_key = <FILE)). Exim gets C(tls_advertise_hosts), or C(tls_certificate) and C(tls_privatekey), as an
    expansion guarded on C($received_ip_address) and C($received_port) that keeps the old value for every other
    listener. OpenSMTPD gets C(tls pki NAME) (or C(smtps pki NAME)) on the listener's C(listen on) line, or loses
    C(tls), C(tls-require) and C(pki) there; the certificate is bound through a C(pki) declaration (an existing
    one with the same files, the line's own pki when no other line uses it, else a new C(mailsec-NAME) pki).
    Sendmail is never edited; the result gives the exact C(.mc) change and the rebuild.
  - A change to something that other listeners share (a Postfix service without an address that listens on
    several, a Dovecot address with several ports, an OpenSMTPD C(listen on) line for an interface or a name with
    several addresses) lists them in RV(affected_listeners) and is refused unless
    O(allow_shared=true).
  - Before a certificate is bound, it and its key are checked on the host exactly as
    M(mailsec.starttls.mta_tls_info) checks them (readable by the daemon's user, parse, key matches, not
    expired, names when O(expected_names) is given); a bad pair is refused with the reason.
  - Every edit is a transaction, like M(ansible.builtin.lineinfile) with C(validate) and C(backup) - the
    candidate is written beside the original, validated by the MTA itself (C(postconf -n/-M/-P) on a staged
    directory; C(doveconf -c CANDIDATE -n); C(exim -C CANDIDATE -bV) and C(-be) of the new expansion;
    C(smtpd -n -f CANDIDATE), which also loads every pki certificate and key), then
    renamed over the original after a backup. On any failure no
    file has changed. Unrelated lines, comments and order are kept.
  - Never reloads the MTA; RV(reload_command) says how, and the P(mailsec.starttls.remediate#role) role runs it.
    OpenSMTPD cannot re-read its configuration; its RV(reload_command) is a restart (the systemd unit the daemon
    runs in, or Debian's unit or init script for C(/etc/smtpd.conf)).
  - A change to an instance whose reload or restart is not known (and no O(reload_command) given) is refused;
    check mode shows it with a warning.
  - Values with newlines or other control characters, and characters that the configuration syntax would
    read as something else, are refused.
author:
  - mailsec.starttls contributors (@mailsec)
extends_documentation_fragment:
  - mailsec.starttls.attributes
attributes:
  check_mode:
    support: full
    details: Computes the change and validates the candidate (in a temporary file beside the original, removed
      again); the configuration files are not touched.
  diff_mode:
    support: full
  platform:
    description: Target operating systems.
    support: full
    platforms: posix
options:
  mta:
    description: The MTA whose listener is changed.
    type: str
    required: true
    choices: [postfix, exim, dovecot, opensmtpd, sendmail]
  instance:
    description:
      - The instance as M(mailsec.starttls.mta_tls_info) names it (the C(instance) of each of its RV(mailsec.starttls.mta_tls_info#module:mtas)),
        or its configuration directory (Postfix) or file (Dovecot).
      - Needed only when the host runs more than one instance of O(mta) and the listener selection (O(address),
        O(port), O(service)) matches listeners of more than one of them.
    type: str
  address:
    description: Address the listener is bound to, as reported (V(127.0.0.1), V(0.0.0.0) for a wildcard).
    type: str
  port:
    description: Port of the listener.
    type: int
  service:
    description:
      - Service name as reported, instead of or beside O(address) (Postfix the C(master.cf) service such as
        V(127.0.0.1:smtp) or V(submission), Dovecot V(imap-login/imap)).
    type: str
  starttls:
    description:
      - V(offered) - advertise STARTTLS with the certificate in O(certificate), or with the one already bound when
        it is usable.
      - V(withdrawn) - stop advertising STARTTLS on this listener only.
      - With neither O(starttls) nor O(implicit_tls) nothing changes; the result names the listener and
        RV(reload_command) (for a certificate renewed on disk that the MTA has not loaded yet).
    type: str
    choices: [offered, withdrawn]
  implicit_tls:
    description:
      - For implicit-TLS listeners (465, 993, 995) only. V(bound) binds O(certificate) to the listener;
        V(disabled) takes the listener out of service (Postfix comments its C(master.cf) entry out, OpenSMTPD its
        C(listen on) line).
    type: str
    choices: [bound, disabled]
  certificate:
    description: Certificate file to bind (PEM; for Postfix, Dovecot and OpenSMTPD it may hold the chain after the leaf).
    type: path
  private_key:
    description: Private key file of O(certificate). Its path is returned; its contents are never read into the result.
    type: path
  chain:
    description: Intermediate certificate files (Postfix writes them into C(smtpd_tls_chain_files)).
    type: list
    elements: path
    default: []
  expected_names:
    description: Names the certificate must cover to be bound.
    type: list
    elements: str
    default: []
  allow_shared:
    description: Make a change that affects the listeners in RV(affected_listeners) too.
    type: bool
    default: false
  backup:
    description: Keep a copy of each changed file (C(FILE.TIMESTAMP.mailsec~)), as RV(backups) lists.
    type: bool
    default: true
  reload_command:
    description:
      - The command that reloads this instance, returned as RV(reload_command) instead of the MTA's own (for
        example V([systemctl, reload, exim4]) where systemd runs the daemon). The module never runs it.
    type: list
    elements: str
  config_paths:
    description: Non-standard configuration paths per MTA (as in M(mailsec.starttls.mta_tls_info)).
    type: dict
    default: {}
  binaries:
    description: Paths of the MTA tools when they are not in the system directories (C(/usr/sbin), C(/usr/bin), C(/sbin), C(/bin),
      C(/usr/local/sbin), C(/usr/local/bin); never the caller's C(PATH)), keyed C(postconf), C(postfix), C(exim), C(doveconf),
      C(dovecot), C(smtpd). An MTA's private daemon directory is never searched (Postfix's C(smtpd) daemon is not OpenSMTPD's).
    type: dict
    default: {}
  ca_file:
    description: Trust anchors for the certificate check instead of the system store.
    type: path
  ca_path:
    description: Directory of hashed trust anchors for the certificate check instead of the system store.
    type: path
notes:
  - OpenSMTPD 6.8.0p2 with OpenSSL 3 (Debian 12) aborts every TLS handshake; binding a certificate there does not
    make a listener work, and the P(mailsec.starttls.remediate#role) role rolls such a change back after its
    re-probe. OpenSMTPD edits only the main C(smtpd.conf), never an included file; C(chain) is refused (the chain
    goes into the certificate file).
  - Exim is edited only in a single configuration file (not Debian's split configuration); its reload is a
    C(SIGHUP) to the running daemon.
  - A Dovecot C(local) block applies to every port of its address; the C(lmtp) service ignores it.
  - An instance whose daemon runs in another network namespace (a container) is refused; its listeners are
    not the host's.
  - Dovecot settings are written into the main configuration file (or an existing C(local) block there);
    a block in an included file is left for a manual change.
seealso:
  - module: mailsec.starttls.mta_tls_info
    description: Reports the listeners, selected here the same way; the role mailsec.starttls.remediate chooses the
      change per finding, reloads, probes again and rolls back.
"""

EXAMPLES = r"""
- name: PATCH | Stop advertising STARTTLS on the Postfix listener that has no certificate
  mailsec.starttls.mta_tls_config:
    mta: postfix
    instance: postfix
    address: 192.0.2.25
    port: 25
    starttls: withdrawn
  register: patch

- name: PATCH | Bind the site certificate to the submission listener of the second Postfix instance
  mailsec.starttls.mta_tls_config:
    mta: postfix
    instance: /etc/postfix-out
    service: submission
    starttls: offered
    certificate: /etc/ssl/mail/mx.example.org.crt
    private_key: /etc/ssl/private/mx.example.org.key
    expected_names: [mx.example.org]

- name: PATCH | Give Dovecot's IMAP on one address its own certificate (a local block)
  mailsec.starttls.mta_tls_config:
    mta: dovecot
    address: 192.0.2.143
    port: 143
    starttls: offered
    certificate: /etc/ssl/mail/imap.example.org.crt
    private_key: /etc/ssl/private/imap.example.org.key
    allow_shared: true   # the block applies to 993 on that address too

- name: PATCH | Bind a certificate to one OpenSMTPD listener (tls pki on its listen line; a restart applies it)
  mailsec.starttls.mta_tls_config:
    mta: opensmtpd
    address: 192.0.2.26
    port: 25
    starttls: offered
    certificate: /etc/ssl/mail/mx.example.org.crt
    private_key: /etc/ssl/private/mx.example.org.key
  register: patch_opensmtpd

- name: PATCH | Reload what changed (the module never reloads)
  ansible.builtin.command:
    argv: "{{ patch.reload_command }}"
  when: patch is changed
"""

RETURN = r"""
listener:
  description: The listener as selected (the record of M(mailsec.starttls.mta_tls_info), shortened).
  returned: always
  type: dict
  sample: {id: postfix/postfix/127.0.60.1:smtp/127.0.60.1:25, mta: postfix, instance: postfix,
           service: "127.0.60.1:smtp", address: 127.0.60.1, port: 25, protocol: smtp, tls_mode: starttls,
           offers_starttls: true, certificate: /etc/ssl/mail/absent.crt, key: /etc/ssl/mail/absent.key,
           binding_source: /etc/postfix/main.cf:12 smtpd_tls_cert_file}
actions:
  description: The edits, one line each.
  returned: always
  type: list
  elements: str
  sample: ["master.cf 127.0.60.1:smtp/inet: -o smtpd_tls_security_level=none"]
affected_listeners:
  description: Ids of other listeners that the same edit changes (a shared service, an address filter).
  returned: always
  type: list
  elements: str
  sample: [dovecot/mailsec-lab-dovecot-demo/imap-login/imaps/127.0.60.1:993]
files:
  description: Configuration files that changed (or would change in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/postfix/master.cf]
backups:
  description: Backup file of each changed file.
  returned: changed and O(backup=true)
  type: dict
  sample: {/etc/postfix/master.cf: /etc/postfix/master.cf.20261202T171500.mailsec~}
validation:
  description: The MTA's own checks of the candidate (the candidate's path shown as C(<candidate>)).
  returned: when something changes
  type: list
  elements: dict
  sample: [{argv: [postconf, -c, <candidate>, -M], rc: 0, stderr: ""}]
reload_command:
  description: The MTA's own reload for this instance (or O(reload_command)), for the caller to run after a change;
    for OpenSMTPD a restart.
  returned: always (null for Sendmail, and for an OpenSMTPD instance whose restart is not known)
  type: list
  elements: str
  sample: [/usr/sbin/postfix, -c, /etc/postfix, reload]
certificate_check:
  description: The check of the pair about to be bound (the store record of M(mailsec.starttls.mta_tls_info)).
  returned: when a certificate is bound or STARTTLS is offered
  type: dict
  sample: {usable: true, problems: [], certificate: {path: /etc/ssl/mail/mx.crt}, key: {path: /etc/ssl/private/mx.key}}
manual:
  description: For an MTA this module does not edit (Sendmail), the exact change to make by hand, line by line.
  returned: when the change is manual
  type: list
  elements: str
  sample: ["In /etc/mail/sendmail.mc, give this daemon the M=S modifier (no STARTTLS on it alone):"]
stage:
  description: Where a failed change stopped (V(arguments), V(plan), V(validate), V(swap)); nothing changed.
  returned: failed
  type: str
  sample: validate
"""

import os
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailsec.starttls.plugins.module_utils import _transaction
from ansible_collections.mailsec.starttls.plugins.module_utils._certs import StoreInspector
from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import ADAPTERS, HostContext
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import normalise_address

EDITABLE = ('postfix', 'exim', 'dovecot', 'opensmtpd', 'sendmail')
# What makes a pair unfit to bind; certificate-expiring and private-key-exposed are findings of their own.
REFUSING_PROBLEMS = ('certificate-missing', 'certificate-unreadable', 'certificate-unparsable', 'key-missing',
                     'key-unreadable', 'certificate-key-mismatch', 'certificate-expired', 'key-encrypted')


def short_listener(listener: dict) -> dict:
    binding = listener.get('binding') or {}
    record = {key: listener.get(key) for key in ('id', 'mta', 'instance', 'service', 'address', 'port', 'protocol',
                                                 'tls_mode', 'offers_starttls', 'defined_at')}
    record.update(certificate=binding.get('certificate'), key=binding.get('key'), binding_source=binding.get('source'))
    return record


def select_instance(instances: list, wanted: str | None, listeners: list, selection: dict) -> tuple:
    """The one instance meant: the one named, else the only one, else the only one with a listener that the
    selection (address, port, service) matches."""
    if wanted:
        found = [item for item in instances
                 if wanted in (item.get('instance'), item.get('config_dir'), item.get('config_path'))]
    else:
        found = instances
        if len(found) > 1:
            holding = {item['instance'] for item in listeners if select_listener([item], **selection)[0]}
            found = [item for item in instances if item.get('instance') in holding] or instances
    if len(found) == 1:
        return found[0], None
    names = ', '.join(str(item.get('instance')) for item in found or instances) or 'none found'
    if not found:
        return None, f'no instance {wanted!r}; instances: {names}'
    return None, f'several instances have such a listener, choose one with instance: {names}'


def select_listener(listeners: list, address: str | None, port: int | None, service: str | None) -> tuple:
    wanted_address = normalise_address(address) if address else None
    if address and wanted_address is None:
        return None, f'address {address!r} is not an IP address'
    found = [item for item in listeners
             if (wanted_address is None or normalise_address(item.get('address') or '') == wanted_address)
             and (port is None or item.get('port') == port)
             and (service is None or item.get('service') == service)]
    if len(found) == 1:
        return found[0], None
    listed = ', '.join(item['id'] for item in (found or listeners)) or 'none'
    if not found:
        return None, f'no listener matches; listeners of the instance: {listed}'
    return None, f'{len(found)} listeners match, narrow the selection: {listed}'


def other_network_namespace(pid) -> str | None:
    """The network namespace of a running daemon when it is not this process's own, else None."""
    if not pid:
        return None
    try:
        own, theirs = os.readlink('/proc/self/ns/net'), os.readlink(f'/proc/{int(pid)}/ns/net')
    except (OSError, ValueError):
        return None
    return theirs if theirs != own else None


def check_pair(inspector, certificate, key, chain, reader, names) -> tuple:
    """(store record, refusal or None)."""
    store = inspector.inspect(certificate, key, list(chain or []), reader, list(names or []))
    refusing = [problem for problem in store['problems']
                if problem['id'] in REFUSING_PROBLEMS or (names and problem['id'] == 'certificate-host-mismatch')]
    if refusing:
        return store, '; '.join(f'{problem["id"]}: {problem["message"]}' for problem in refusing)
    if store['usable'] is not True:
        unknown = '; '.join(f'{item["check"]}: {item["reason"]}' for item in store['unknown']) or 'not known'
        return store, f'usability could not be established ({unknown})'
    return store, None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            'mta': {'type': 'str', 'required': True, 'choices': list(EDITABLE)},
            'instance': {'type': 'str'},
            'address': {'type': 'str'},
            'port': {'type': 'int'},
            'service': {'type': 'str'},
            'starttls': {'type': 'str', 'choices': ['offered', 'withdrawn']},
            'implicit_tls': {'type': 'str', 'choices': ['bound', 'disabled']},
            'certificate': {'type': 'path'},
            'private_key': {'type': 'path', 'no_log': False},
            'chain': {'type': 'list', 'elements': 'path', 'default': []},
            'expected_names': {'type': 'list', 'elements': 'str', 'default': []},
            'allow_shared': {'type': 'bool', 'default': False},
            'backup': {'type': 'bool', 'default': True},
            'reload_command': {'type': 'list', 'elements': 'str'},
            'config_paths': {'type': 'dict', 'default': {}},
            'binaries': {'type': 'dict', 'default': {}},
            'ca_file': {'type': 'path'},
            'ca_path': {'type': 'path'},
        },
        required_one_of=[('address', 'service', 'port')],
        mutually_exclusive=[('starttls', 'implicit_tls')],
        required_if=[('implicit_tls', 'bound', ('certificate',))],
        supports_check_mode=True,
    )
    params = module.params
    result = {'changed': False, 'actions': [], 'affected_listeners': [], 'files': [], 'reload_command': None}
    try:
        for name in ('instance', 'address', 'service', 'certificate', 'private_key'):
            _transaction.refuse_unsafe(name, params[name])
        for item in params['chain'] + params['expected_names'] + (params['reload_command'] or []):
            _transaction.refuse_unsafe('chain/expected_names', item)
    except _transaction.EditError as exc:
        module.fail_json(msg=str(exc), stage=exc.stage, **result)
    if params['starttls'] == 'withdrawn' and (params['certificate'] or params['chain']):
        module.fail_json(msg='starttls=withdrawn takes no certificate', stage='arguments', **result)

    ctx = HostContext(use_tools='auto')
    gathered = gather_host({'mtas': [params['mta']], 'config_paths': params['config_paths'],
                            'binaries': params['binaries'], 'scan_sockets': False,
                            'host': socket.gethostname()}, ctx=ctx)
    selection = {'address': params['address'], 'port': params['port'], 'service': params['service']}
    instance, problem = select_instance(gathered['mtas'], params['instance'], gathered['listeners'], selection)
    if instance is None:
        module.fail_json(msg=f'{params["mta"]}: {problem}', stage='arguments', **result)
    foreign = other_network_namespace(instance.get('pid'))
    if foreign:
        module.fail_json(msg=f'{params["mta"]} instance {instance["instance"]} runs in another network namespace '
                             f'({foreign}, a container or a test lab): its listeners are not this host\'s; not edited',
                         stage='arguments', **result)
    siblings = [item for item in gathered['listeners'] if item['instance'] == instance['instance']]
    listener, problem = select_listener(siblings, params['address'], params['port'], params['service'])
    if listener is None:
        module.fail_json(msg=f'{params["mta"]} instance {instance["instance"]}: {problem}', stage='arguments', **result)
    result['listener'] = short_listener(listener)
    # What the listener is decides what may be asked of it, for every MTA alike.
    implicit = listener.get('tls_mode') == 'implicit'
    if implicit and params['starttls']:
        module.fail_json(msg=f'{listener["id"]} is an implicit-TLS listener: it has no STARTTLS to offer or withdraw; '
                             'use implicit_tls', stage='arguments', **result)
    if params['implicit_tls'] and not implicit:
        module.fail_json(msg=f'implicit_tls applies to implicit-TLS listeners only; {listener["id"]} is not one: '
                             'use starttls', stage='arguments', **result)

    desired = {'starttls': params['starttls'], 'implicit_tls': params['implicit_tls'],
               'certificate': params['certificate'], 'private_key': params['private_key'], 'chain': params['chain'],
               'reload_command': params['reload_command']}
    inspector = StoreInspector(ca_file=params['ca_file'], ca_path=params['ca_path'])
    if params['certificate']:
        store, refusal = check_pair(inspector, params['certificate'], params['private_key'], params['chain'],
                                    listener.get('reader_user'), params['expected_names'])
        result['certificate_check'] = store
        if refusal:
            module.fail_json(msg=f'the certificate is not bound: {refusal}', stage='arguments', **result)
    elif params['starttls'] == 'offered':
        binding = listener.get('binding') or {}
        if not binding.get('certificate'):
            module.fail_json(msg=f'{listener["id"]} has no certificate bound: give certificate and private_key',
                             stage='arguments', **result)
        store, refusal = check_pair(inspector, binding['certificate'], binding.get('key'), binding.get('chain'),
                                    listener.get('reader_user'), params['expected_names'])
        result['certificate_check'] = store
        if refusal:
            module.fail_json(msg=f'the certificate bound now is not usable, give another: {refusal}',
                             stage='arguments', **result)

    adapter = ADAPTERS[params['mta']]()
    if not params['starttls'] and not params['implicit_tls']:
        # Nothing declared: report the listener and how its instance reloads (a renewed certificate).
        reload_command = getattr(adapter, 'reload_command', None)
        result['reload_command'] = params['reload_command'] or (reload_command(ctx, instance) if reload_command else None)
        module.exit_json(**result)
    try:
        plan = adapter.plan_tls_change(ctx, instance, listener, desired, siblings)
    except _transaction.EditError as exc:
        module.fail_json(msg=str(exc), stage=exc.stage, **result)
    result.update(actions=plan['actions'], affected_listeners=plan['affected'],
                  reload_command=params['reload_command'] or plan['reload_command'])
    if plan.get('manual'):
        result['manual'] = plan['manual']
        module.warn(f'{params["mta"]} is not edited by this module: the change to make by hand is in "manual"')
        module.exit_json(**result)
    if plan['changes'] and not result['reload_command']:
        # The module never reloads, but a change that nothing can apply is not made: the running daemon and the
        # file would disagree until somebody restarts it by hand.
        unknown = (f'no way to reload or restart this {params["mta"]} instance is known '
                   '(no systemd unit, no init script, no running daemon): give reload_command')
        if not module.check_mode:
            module.fail_json(msg=f'{unknown}; nothing changed', stage='plan', **result)
        module.warn(f'{unknown}; a run that is not in check mode is refused without it')
    if plan['changes'] and plan['affected'] and not params['allow_shared']:
        module.fail_json(msg=f'the change also affects {", ".join(plan["affected"])}; nothing changed '
                             '(allow_shared=true makes it anyway)', stage='plan', **result)
    try:
        outcome = _transaction.apply(plan['changes'], plan['validate'], check_mode=module.check_mode,
                                     backup=params['backup'])
    except _transaction.EditError as exc:
        module.fail_json(msg=f'{exc}; nothing changed', stage=exc.stage, **dict(result, **exc.details))
    result.update(changed=outcome['changed'], files=outcome['files'], validation=outcome['validation'])
    if outcome['backups']:
        result['backups'] = outcome['backups']
    if module._diff and outcome['diff']:
        result['diff'] = outcome['diff']
    if not outcome['changed']:
        result['actions'] = []
    module.exit_json(**result)


if __name__ == '__main__':
    main()
