# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
"""

    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
"""

    PROBE = r"""
options:
  ehlo_name:
    description:
      - Name sent with C(EHLO) and C(LHLO).
      - Defaults to the local host name when it is fully qualified, else to the address literal of the
        probing side of each connection (for example V([127.0.0.1])). No DNS lookup is made for it.
    type: str
  timeout:
    description:
      - Seconds each phase (connect, capabilities, STARTTLS, handshake, after TLS) may take in all,
        however slowly the server trickles its reply.
    type: float
    default: 10
  greeting_timeout:
    description:
      - Seconds to wait for the server greeting. Servers delay it on purpose (Postfix postscreen,
        Sendmail C(greet_pause)); RFC 5321 allows clients to wait 5 minutes.
    type: float
    default: 30
  deadline:
    description:
      - Seconds one target may take in all, whatever the phases do.
    type: float
    default: 60
  concurrency:
    description:
      - At most how many listeners are probed at the same time. Probes of slow or distant servers mostly wait
        for replies, so many in flight cost little; the per-address limit below keeps any one server from seeing
        more than a few.
      - Each probe process starts with 8 probes in flight and doubles them every 20 ms while it used less than
        three quarters of a CPU in that time (its probes wait on the network), up to its share of this limit.
        A sweep that the CPU limits (fast servers nearby) stays small, because threads that only wait for the
        interpreter lock cost CPU without probing faster.
    type: int
    default: 128
  per_host_limit:
    description:
      - How many connections one address receives at the same time, so that rate limits such as
        Postfix C(smtpd_client_connection_count_limit) or C(anvil) are not tripped.
    type: int
    default: 8
  processes:
    description:
      - How many processes share the probes made from this machine. Each address is probed by one of them, so
        O(per_host_limit) holds as before, and they share O(concurrency).
      - By default one for every full 100 targets, at most one per CPU this process may use (its affinity mask). One process
        keeps the Python interpreter busy with the dialogs of every probe, so a large run is bound to one CPU
        however many probes wait on the network; each further process adds one.
      - A run through O(jump_host) stays in one process, and so does a run from a process that has other
        threads running (a fork copies only the calling thread, and the locks the others held).
      - A process that ends without its results (killed, out of memory) costs only its own targets, each of
        which gets an C(error) in stage C(connect) that says so.
    type: int
  attempts:
    description:
      - How many times each listener is probed. With more than one, the outcomes are compared and a
        difference is flagged C(inconsistent) (for example the nodes behind a load balancer differ).
    type: int
    default: 1
  ca_file:
    description:
      - File of trust anchors used to verify presented chains instead of the system store.
    type: path
  ca_path:
    description:
      - Directory of hashed trust anchors used to verify presented chains instead of the system store.
    type: path
  vantage:
    description:
      - Label for where the probes come from, recorded in every probe (for example V(host), V(controller)
        or V(jump:bastion1)). Defaults to the local host name.
    type: str
  try_starttls_when_not_advertised:
    description:
      - Send STARTTLS even when the server does not advertise it, to see through middleboxes that mask
        or strip the keyword (Cisco ASA ESMTP inspection turns C(STARTTLS) into C(XXXXXXXA)).
    type: bool
    default: false
  test_command_injection:
    description:
      - Send a C(NOOP) in the same segment as STARTTLS and report a server that answers it after the
        handshake (CVE-2011-0411). Off by default because it sends one command more than a normal client.
    type: bool
    default: false
  source_address:
    description:
      - Connect from this local IP address (an address of the machine the probe runs on), for a vantage
        that a firewall or relay tells apart from others by its source address.
      - Not used through a jump host (the jump host chooses its own source address).
    type: str
"""
