#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mta_tls_info
short_description: Inspect the mail servers of a host, their listeners and the certificate bound to each
version_added: 0.1.0
description:
  - Finds which MTAs are installed and running on the host (Postfix with all its instances, Exim, Dovecot,
    OpenSMTPD, Sendmail), the listeners their configuration defines and the sockets really open.
  - For every listener, tells whether the configuration makes it offer STARTTLS, which certificate, key and
    chain apply to exactly that address and port and which rule chose them (a Postfix C(master.cf -o)
    override beats C(main.cf); an Exim expansion on C($received_ip_address)/C($received_port) is evaluated
    for the listener when it is a simple condition; Dovecot C(local) blocks; OpenSMTPD C(pki)), and whether
    that certificate store is usable as the user that really reads it.
  - Probes each listener from the host itself (vantage V(host)) with the engine of
    M(mailsec.starttls.listener_probe), through the bound address or loopback for a wildcard.
  - Prefers the MTAs' own tools (C(postconf), C(exim -bP), C(doveconf -n)) and falls back to reading the files.
  - Never changes anything. An odd configuration becomes a warning with its file and line, never a failure;
    without root it says what it could not see.
  - Private key material is inspected on the host and never returned.
  - Configuration files are treated as hostile input (the module runs as root). Only regular files are read, each
    with a size cap; a file that holds a private key, PEM armour or binary data is never parsed as configuration;
    includes are checked for cycles and counted, macro and variable expansions are limited in size and count;
    warnings quote at most a short excerpt, never a line that looks like key material, and at most 200 are kept;
    file names that are not UTF-8 are returned escaped. The limits are listed in the collection's
    C(docs/mta_tls_info.md).
author:
  - mailsec.starttls contributors (@mailsec)
extends_documentation_fragment:
  - mailsec.starttls.attributes
  - mailsec.starttls.attributes.INFO_MODULE
attributes:
  platform:
    description: Target operating systems.
    support: full
    platforms: posix
options:
  mtas:
    description: Inspect only these MTAs (default all).
    type: list
    elements: str
    choices: [postfix, exim, dovecot, opensmtpd, sendmail]
  config_paths:
    description:
      - Configuration of non-standard installs, per MTA, in addition to what is found from the running
        processes and the default places.
      - V(postfix) takes a list of configuration directories (each one an instance); V(exim), V(dovecot),
        V(opensmtpd) and V(sendmail) take a list of configuration files.
    type: dict
    default: {}
  binaries:
    description: Paths of the MTA tools when they are not in the system directories (C(/usr/sbin), C(/usr/bin), C(/sbin), C(/bin),
      C(/usr/local/sbin), C(/usr/local/bin); never the caller's C(PATH)), keyed C(postconf), C(exim), C(doveconf).
    type: dict
    default: {}
  use_tools:
    description:
      - V(auto) runs the MTAs' own tools where present and reads the files where not; V(never) only reads files;
        V(always) warns when a tool is missing.
    type: str
    choices: [auto, never, always]
    default: auto
  scan_sockets:
    description: Match the listeners with the sockets open on the host (C(/proc/net/tcp), C(/proc/net/tcp6)).
    type: bool
    default: true
  network_namespaces:
    description:
      - V(own) inspects the MTAs of the module's own network namespace, the ones the host's addresses reach;
        an MTA whose processes run in another network namespace (a container, a sandboxed service) is named in
        a warning and not inspected, so that its listeners are never joined with probes of other sockets.
      - V(all) inspects those too; their listeners carry C(net_namespace) and a note, and their sockets are
        read through the master's C(/proc/PID/net).
    type: str
    choices: [own, all]
    default: own
  extra_mail_ports:
    description: Ports besides the well-known mail ports whose unclaimed listening sockets are reported.
    type: list
    elements: int
    default: []
  host:
    description: Name recorded in every listener, normally C(inventory_hostname). Defaults to the host name.
    type: str
  expiring_days:
    description: A certificate that ends within this many days is reported as expiring.
    type: int
    default: 30
  ca_file:
    description: Trust anchors for the chain checks instead of the system store.
    type: path
  ca_path:
    description: Directory of hashed trust anchors for the chain checks instead of the system store.
    type: path
  probe:
    description: Probe every listener from the host itself and attach the result to it.
    type: bool
    default: true
  probe_options:
    description:
      - Options for the host's own probes, as for M(mailsec.starttls.listener_probe) (for example C(timeout),
        C(deadline), C(concurrency), C(ehlo_name)). The vantage is always V(host).
    type: dict
    default: {}
  next_keys:
    description:
      - Private key files (paths or glob patterns) staged for the next certificate renewal. Their public key digests
        are returned in RV(next_keys), so that the audit can tell whether the DANE TLSA records already pin them
        (finding C(dane-next-key-unpublished)). The keys themselves never leave the host.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  next_key_layouts:
    description:
      - Also find the next key of every bound certificate kept by certbot (C(live/NAME), C(archive/NAME),
        C(renewal/NAME.conf) with C(reuse_key)) or acme.sh (C(DOMAIN.conf) with C(Le_ForceNewDomainKey)).
    type: bool
    default: false
    version_added: 0.1.0
seealso:
  - module: mailsec.starttls.listener_probe
"""

EXAMPLES = r"""
- name: AUDIT | Inspect the mail listeners and certificate stores of every mail host
  mailsec.starttls.mta_tls_info:
    host: "{{ inventory_hostname }}"
  register: starttls_host

- name: AUDIT | Show the listeners that advertise STARTTLS without a usable certificate
  ansible.builtin.debug:
    msg: "{{ item.mta }} {{ item.address }}:{{ item.port }} ({{ item.defined_at }})"
  loop: "{{ starttls_host.listeners | selectattr('offers_starttls') }}"
  loop_control:
    label: "{{ item.id }}"
  # store is null when no certificate is bound at all, else the key of its record in stores
  when: item.store is none or not starttls_host.stores[item.store].usable

- name: AUDIT | A Postfix instance in a non-standard place, files only, no probes
  mailsec.starttls.mta_tls_info:
    mtas: [postfix]
    config_paths:
      postfix: [/srv/postfix-out]
    use_tools: never
    probe: false
"""

RETURN = r"""
mtas:
  description: MTA instances found, installed or running.
  returned: always
  type: list
  elements: dict
  sample:
    - name: postfix
      instance: postfix-a
      version: 3.7.11
      config_files: [/etc/postfix-a/main.cf, /etc/postfix-a/master.cf]
      running: true
      pid: 1234
      reading_user: root
      reading_identity: {name: root, uid: 0, gids: [0], source: live daemon pid 1234 (/proc/1234/status), reason: null, live: true}
listeners:
  description:
    - One record per listener (address and port) of every instance; see the collection's docs/architecture.md.
    - C(tls_mode) is V(none) when the configuration lets the listener do no TLS at all.
    - C(offers_starttls) is null with C(offers_starttls_reason) when it cannot be told from the configuration.
    - C(binding.source) names the rule that chose the certificate (for example
      V(master.cf:21 -o smtpd_tls_cert_file)); C(binding.resolved) is false for an expansion that could not be
      evaluated.
    - C(store) names the certificate store's health record in RV(stores) by its key (null when no certificate is
      bound; a list of keys for Postfix C(smtpd_tls_chain_files), one per key and chain); the C(store) of each
      C(binding.sni) entry likewise.
    - C(listening) is true, false, or null when the sockets could not be seen; C(probe) is the host's own
      probe (as M(mailsec.starttls.listener_probe) returns it) or null.
    - Each certificate is described once per host, in RV(certificates). Where a listener saw one (a store's
      C(certificate.describe), C(probe.certificate)) the record keeps its C(sha256) and only what belongs
      to that place (C(hostname_match), C(chain_length), C(verified), C(verify_error), C(tlsa_chain), C(error)); a
      description that could not be made (C(error) set) stays whole. The audit's judgement, its reports and the collection's
      filters take the result as registered and put the two together.
    - C(uncertain) lists what host inspection could not tell about this listener (C(what) is V(address),
      V(offers_starttls), V(binding) or V(configuration); C(where) the file and line; C(reason) what was not
      understood); the audit turns a non-empty list into an C(inspection-uncertain) finding. An address that
      could not be established is V(unknown), with C(probe_address) null.
    - C(reader_identity) is the identity the key is read as (C(uid), C(gids), C(source)), taken from the live daemon
      first, the configuration's user when nothing runs; C(uid) null (with C(reason)) when neither could be read,
      and readability is then unknown, never false.
  returned: always
  type: list
  elements: dict
  sample:
    - id: postfix/postfix-a/127.0.10.2:smtp/127.0.10.2:25
      host: mail1
      address: 127.0.10.2
      port: 25
      protocol: smtp
      tls_mode: starttls
      mta: postfix
      instance: postfix-a
      service: "127.0.10.2:smtp"
      defined_at: /etc/postfix-a/master.cf:14
      offers_starttls: true
      offers_starttls_reason: main.cf:20 smtpd_tls_security_level = may
      binding:
        certificate: /etc/ssl/missing.pem
        key: /etc/ssl/private/missing.key
        chain: []
        source: main.cf:22 smtpd_tls_cert_file
        resolved: true
        sni: []
      reader_user: root
      reader_identity: {name: root, uid: 0, gids: [0], source: live daemon pid 1234 (/proc/1234/status), reason: null, live: true}
      uncertain: []
      listening: true
      probe_address: 127.0.10.2
      store: 3f0c9a1e5b7d2c48
      probe:
        starttls_advertised: true
        starttls_reply: {code: "454", text: 4.7.0 TLS not available due to local problem}
certificates:
  description:
    - Every certificate seen on the host (bound in a store or presented to the host's own probe), described once,
      keyed by its SHA-256 fingerprint (lowercase hex); listener records refer to it by C(sha256).
    - C(expired) and C(days_left) are as of the inspection.
  returned: always
  type: dict
  version_added: 0.1.0
  sample:
    9699962823490f84ae98a0f20e53d8a744f6d81c9112cf295e47d4bfacc7df8e:
      subject: CN=mail.example.org,O=Example
      issuer: CN=Example CA,O=Example
      sans: ["DNS:mail.example.org", "IP:192.0.2.25"]
      not_before: "2026-12-02T16:41:28Z"
      not_after: "2027-12-02T17:41:28Z"
      expired: false
      days_left: 364
      self_signed: false
      key_type: RSA
      key_bits: 2048
      serial: "1005"
      signature_algorithm: sha256WithRSAEncryption
stores:
  description:
    - The health of every certificate store bound on the host (one record per distinct certificate, key, chain and
      reading identity), returned once however many listeners and SNI entries are bound to it, keyed by a digest of
      the record (the same record has the same key from run to run); listener records name it in C(store).
    - C(usable) is true only when the files exist, are readable by the listener's C(reader_user), parse, the key
      matches and the certificate has not expired; false with C(problems) (stable C(id) and C(message)) when one of
      these fails; null when a check that matters could not be made (C(unknown) says why).
    - C(certificate.describe) refers to RV(certificates) by C(sha256), as described under RV(listeners).
  returned: always
  type: dict
  version_added: 0.1.0
  sample:
    3f0c9a1e5b7d2c48:
      usable: false
      problems: [{id: certificate-missing, message: /etc/ssl/missing.pem does not exist}]
      unknown: []
      certificate: {path: /etc/ssl/missing.pem, exists: false, readable: null, parses: null, describe: null, chain_length: 0}
      key: {path: /etc/ssl/private/missing.key, exists: false, readable: null, matches_certificate: null}
unmatched_sockets:
  description: Listening sockets on mail ports (or owned by an MTA) that no configured listener explains.
  returned: always
  type: list
  elements: dict
  sample: [{address: 0.0.0.0, port: 2525, pid: 812, process: master, mta: postfix, reason: listening but no configured listener matches}]
warning_details:
  description: Every warning with where it comes from (file and line, MTA, instance); the texts are also Ansible warnings.
  returned: always
  type: list
  elements: dict
  sample: [{message: "unknown master.cf syntax", where: /etc/postfix/master.cf:40, mta: postfix, instance: postfix}]
not_visible:
  description: What could not be seen, typically without root (process environments, socket owners).
  returned: always
  type: list
  elements: dict
  sample: [{what: environment of pid 1234, mta: postfix}]
privileged:
  description: Whether the inspection ran as root.
  returned: always
  type: bool
  sample: true
next_keys:
  description:
    - Keys staged for the next renewal (O(next_keys), O(next_key_layouts)) as SHA-256 and SHA-512 digests of their
      public keys; an entry with C(unknown_next_key) is a lineage whose next renewal makes a key that exists nowhere yet.
  returned: when O(next_keys) or O(next_key_layouts) is set
  type: list
  elements: dict
  sample:
    - {path: /etc/letsencrypt/archive/mx1.example.org/privkey3.pem, source: certbot, lineage: mx1.example.org,
       for_certificate: /etc/letsencrypt/live/mx1.example.org/fullchain.pem, reuse_key: null, error: null,
       spki_sha256: 8c1f3e9a6b0d4e2f7a5c3b1d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f, spki_sha512: null}
cost:
  description: CPU and wall seconds the inspection took on the host (probes included).
  returned: always
  type: dict
  sample: {cpu_seconds: 0.08, wall_seconds: 0.4}
"""

import socket

from ansible.module_utils.basic import AnsibleModule

# First: importing it makes the collection's imports below compile each source once (see _zipload).
from ansible_collections.mailsec.starttls.plugins.module_utils import _zipload  # noqa: F401 pylint: disable=unused-import
from ansible_collections.mailsec.starttls.plugins.module_utils import _tlsa
from ansible_collections.mailsec.starttls.plugins.module_utils._certs import StoreInspector
from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._host_result import compact
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import (
    TargetError,
    normalise_options,
    parse_target,
    probe_many,
)


def host_prober(probe_options: dict):
    """The gather's probe hook: one engine run for all listeners, each distinct endpoint once."""
    def probe(listeners: list) -> list:
        targets, index = [], {}
        for listener in listeners:
            if listener['listening'] is False or not listener['probe_address'] or not listener['port']:
                continue
            endpoint = (listener['probe_address'], listener['port'], listener['protocol'])
            if endpoint not in index:
                target = {'address': endpoint[0], 'port': endpoint[1], 'protocol': endpoint[2]}
                try:
                    # An address a configuration names that cannot be probed costs only its own probe.
                    parse_target(target)
                except TargetError:
                    continue
                index[endpoint] = len(targets)
                targets.append(target)
        results = probe_many(targets, probe_options)
        return [results[index[(listener['probe_address'], listener['port'], listener['protocol'])]]
                if (listener['probe_address'], listener['port'], listener['protocol']) in index else None
                for listener in listeners]
    return probe


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            'mtas': {'type': 'list', 'elements': 'str',
                     'choices': ['postfix', 'exim', 'dovecot', 'opensmtpd', 'sendmail']},
            'config_paths': {'type': 'dict', 'default': {}},
            'binaries': {'type': 'dict', 'default': {}},
            'use_tools': {'type': 'str', 'choices': ['auto', 'never', 'always'], 'default': 'auto'},
            'scan_sockets': {'type': 'bool', 'default': True},
            'network_namespaces': {'type': 'str', 'choices': ['own', 'all'], 'default': 'own'},
            'extra_mail_ports': {'type': 'list', 'elements': 'int', 'default': []},
            'host': {'type': 'str'},
            'expiring_days': {'type': 'int', 'default': 30},
            'ca_file': {'type': 'path'},
            'ca_path': {'type': 'path'},
            'probe': {'type': 'bool', 'default': True},
            'probe_options': {'type': 'dict', 'default': {}},
            'next_keys': {'type': 'list', 'elements': 'str', 'default': [], 'no_log': False},
            'next_key_layouts': {'type': 'bool', 'default': False},
        },
        supports_check_mode=True,
    )
    params = module.params
    probe = None
    if params['probe']:
        try:
            probe_options = normalise_options(dict(params['probe_options'], vantage='host'))
        except (TargetError, TypeError, ValueError) as exc:
            module.fail_json(msg=f'probe_options: {exc}')
        probe = host_prober(probe_options)
    inspector = StoreInspector(ca_file=params['ca_file'], ca_path=params['ca_path'])
    expiring_days = params['expiring_days']

    class Inspector:
        @staticmethod
        def inspect(cert_path, key_path, chain_paths, reader_user, expected_names):
            return inspector.inspect(cert_path, key_path, chain_paths, reader_user, expected_names,
                                     expiring_days=expiring_days)

    gathered = gather_host(
        {'mtas': params['mtas'], 'config_paths': params['config_paths'], 'binaries': params['binaries'],
         'use_tools': params['use_tools'], 'scan_sockets': params['scan_sockets'],
         'network_namespaces': params['network_namespaces'],
         'extra_mail_ports': params['extra_mail_ports'], 'host': params['host'] or socket.gethostname()},
        probe=probe, store_inspector=Inspector())
    for warning in gathered['warnings']:
        place = ' '.join(part for part in (warning.get('mta'), warning.get('where')) if part)
        module.warn(f'{place}: {warning["message"]}' if place else warning['message'])
    extra = {}
    if params['next_keys'] or params['next_key_layouts']:
        extra['next_keys'] = _tlsa.next_keys(
            [(listener.get('binding') or {}).get('certificate') for listener in gathered['listeners']],
            params['next_keys'], inspector.load_public_key, layouts=params['next_key_layouts'])
    travelling = compact(gathered)
    module.exit_json(
        changed=False,
        mtas=gathered['mtas'],
        listeners=travelling['listeners'],
        certificates=travelling['certificates'],
        stores=travelling['stores'],
        unmatched_sockets=gathered['unmatched_sockets'],
        warning_details=gathered['warnings'],
        not_visible=gathered['not_visible'],
        privileged=gathered['privileged'],
        cost=gathered['cost'],
        **extra
    )


if __name__ == '__main__':
    main()
