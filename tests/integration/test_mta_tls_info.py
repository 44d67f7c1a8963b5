# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""mta_tls_info in a real ansible-playbook run on a host running the real-MTA lab."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._host_result import expand

# Where the module and the lab's manifest legitimately see a binding differently: Dovecot's LMTP
# ignores `local {}` blocks and OpenSMTPD binds no pki to a listen line without `tls`; the module
# reports what the daemon uses (none), the manifest what the configuration declares nearby.
BINDING_SEMANTICS_DIFFER = {'dovecot-bound/127.0.30.5:24', 'opensmtpd-main/127.0.40.4:25'}


@pytest.fixture(scope='module')
def inspected(lab, run_mta_tls_info):
    # A daemon that refused to start leaves no process to find its configuration from: name it, as a
    # user with a non-standard install would.
    config_paths = {}
    for daemon in lab['daemons']:
        if not daemon['started'] and daemon.get('config_file'):
            config_paths.setdefault(daemon['mta'], []).append(daemon['config_file'])
    outcome = run_mta_tls_info({'host': 'lab', 'config_paths': config_paths,
                                'probe_options': {'timeout': 5, 'deadline': 20}}, args=('--check',))
    result = outcome['result']
    # The module inspects the whole host: MTAs that run beside the lab (the demo host in the machine's
    # network namespace, say) are found too. Only the lab's own listeners are compared here.
    # Listeners name their store by its key in `stores`: read the records whole, as the audit does.
    by_endpoint = {}
    for listener in expand(result)['listeners']:
        if str(listener.get('defined_at') or '').startswith(lab['root'].rstrip('/') + '/'):
            by_endpoint.setdefault((listener['address'], listener['port']), []).append(listener)
    return lab, result, by_endpoint


def test_each_store_is_returned_once_and_every_key_names_one(inspected):
    _manifest, result, _by_endpoint = inspected
    keys = [listener['store'] for listener in result['listeners'] if listener.get('store') is not None]
    keys = [key for item in keys for key in (item if isinstance(item, list) else [item])]
    assert keys and all(isinstance(key, str) and key in result['stores'] for key in keys), keys
    # The lab binds one store to several listeners: fewer records than references.
    assert len(result['stores']) < len(keys)
    assert set(result['stores']) == set(keys) | {entry['store'] for listener in result['listeners']
                                                 for entry in (listener.get('binding') or {}).get('sni') or []
                                                 if isinstance(entry.get('store'), str)}


def lab_listeners(manifest, running=True):
    return [item for item in manifest['listeners'] if item['expect'].get('starts', True) == running]


def test_every_running_lab_listener_is_found_listening_and_bound_as_configured(inspected):
    manifest, result, by_endpoint = inspected
    problems = []
    for item in lab_listeners(manifest):
        found = by_endpoint.get((item['address'], item['port']))
        if not found:
            problems.append(f"{item['id']}: not found")
            continue
        listener = found[0]
        if listener['listening'] is not True:
            problems.append(f"{item['id']}: listening={listener['listening']}")
        if item['id'] not in BINDING_SEMANTICS_DIFFER and listener['binding']['certificate'] != item['bound_cert']:
            problems.append(f"{item['id']}: bound {listener['binding']['certificate']} ({listener['binding']['source']}),"
                            f" lab configured {item['bound_cert']}")
    assert problems == []
    assert result['changed'] is False


def test_two_postfix_instances_and_each_mta_are_found(inspected):
    _manifest, result, _by_endpoint = inspected
    running = {(mta['mta'], mta['instance']) for mta in result['mtas'] if mta.get('running')}
    assert all(mta['name'] == mta['mta'] for mta in result['mtas'])
    assert {('postfix', 'postfix-a'), ('postfix', 'postfix-b')} <= running
    assert {name for name, _instance in running} >= {'postfix', 'exim', 'dovecot', 'opensmtpd'}


@pytest.mark.parametrize('scenario, problem', [
    ('cert-missing', 'certificate-missing'),
    ('key-mismatch', 'certificate-key-mismatch'),
    ('expired-cert', 'certificate-expired'),
])
def test_broken_stores_are_unusable_with_the_reason(inspected, scenario, problem):
    manifest, _result, by_endpoint = inspected
    checked = 0
    for item in lab_listeners(manifest):
        if item['scenario'] != scenario or item['id'] in BINDING_SEMANTICS_DIFFER:
            continue
        # Dovecot's LMTP uses the global certificate whatever the scenario: the lab says where it works.
        if scenario == 'key-mismatch' and item['expect'].get('handshake'):
            continue
        listener = by_endpoint[(item['address'], item['port'])][0]
        store = listener['store']
        assert store is not None, item['id']
        assert store['usable'] is False, (item['id'], store)
        assert problem in [entry['id'] for entry in store['problems']], (item['id'], store['problems'])
        checked += 1
    assert checked, f'the lab has no running {scenario} listener'


def test_compliant_stores_are_usable(inspected):
    manifest, _result, by_endpoint = inspected
    compliant = [item for item in lab_listeners(manifest) if item['scenario'] == 'compliant' and item['bound_cert']]
    assert compliant
    for item in compliant:
        listener = by_endpoint[(item['address'], item['port'])][0]
        assert listener['store']['usable'] is True, (item['id'], listener['store'])


def test_per_listener_binding_rules_are_named(inspected):
    """A certificate bound to one listener only: Postfix -o, Exim expansion, Dovecot local block."""
    _manifest, _result, by_endpoint = inspected
    postfix = by_endpoint[('127.0.10.5', 25)][0]
    assert '-o smtpd_tls_cert_file' in postfix['binding']['source']
    postfix_sibling = by_endpoint[('127.0.10.6', 25)][0]
    assert postfix_sibling['binding']['certificate'] is None
    assert postfix_sibling['offers_starttls'] is True
    exim = by_endpoint[('127.0.20.5', 25)][0]
    assert 'evaluated for 127.0.20.5' in exim['binding']['source']
    exim_sibling = by_endpoint[('127.0.20.6', 25)][0]
    assert exim_sibling['binding']['certificate'] is None
    assert 'self-signed' in exim_sibling['binding']['source']
    dovecot = by_endpoint[('127.0.30.5', 143)][0]
    assert 'local 127.0.30.5' in dovecot['binding']['source']


def test_host_probe_is_attached_and_agrees_with_the_lab(inspected):
    manifest, _result, by_endpoint = inspected
    problems = []
    for item in lab_listeners(manifest):
        probe = by_endpoint[(item['address'], item['port'])][0]['probe']
        if probe is None:
            problems.append(f"{item['id']}: no probe")
            continue
        if probe['vantage'] != 'host':
            problems.append(f"{item['id']}: vantage {probe['vantage']}")
        expect = item['expect']
        if item['tls_mode'] == 'starttls' and expect.get('advertised') is not None \
                and probe['starttls_advertised'] != expect['advertised']:
            problems.append(f"{item['id']}: advertised {probe['starttls_advertised']}")
        established = (probe['tls'] or {}).get('established', False)
        if expect.get('handshake') is not None and established != expect['handshake']:
            problems.append(f"{item['id']}: handshake {established}, error {probe['error']}")
    assert problems == []


def test_a_daemon_that_refuses_to_start_shows_as_configured_but_not_listening(inspected):
    manifest, result, by_endpoint = inspected
    refused = lab_listeners(manifest, running=False)
    assert refused
    seen = [by_endpoint.get((item['address'], item['port'])) for item in refused]
    assert any(found and found[0]['listening'] is False for found in seen), seen
    assert result['unmatched_sockets'] == [] or all('reason' in entry for entry in result['unmatched_sockets'])


def test_private_keys_never_appear_in_the_result(inspected):
    _manifest, result, _by_endpoint = inspected
    import json  # pylint: disable=import-outside-toplevel
    assert 'PRIVATE KEY' not in json.dumps(result)
