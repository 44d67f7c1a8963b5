# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The address format of Linux's /proc/net/tcp and tcp6 tables, in one place.

Standard library only and free of collection imports, so that the test lab
(tests/lab/lab_proc.py), which runs outside any ansible_collections tree, loads this very
file instead of keeping a copy of the decoder.
"""

from __future__ import annotations

import ipaddress


def decode_address(address_hex: str) -> str:
    """An address from /proc/net/tcp's hex: the kernel prints each 32-bit word of the address
    in host (little-endian) byte order, one word for IPv4 and four for IPv6. An IPv4-mapped
    IPv6 address (a dual-stack socket bound to one IPv4 address) is given as that IPv4 address."""
    raw = bytes.fromhex(address_hex)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b''.join(raw[index:index + 4][::-1] for index in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def decode_endpoint(endpoint_hex: str) -> tuple:
    """(address, port) from one address:port column of /proc/net/tcp, e.g. '0100007F:0019'.
    Raises ValueError for anything else."""
    address_hex, separator, port_hex = endpoint_hex.partition(':')
    if not separator:
        raise ValueError(f'not an address:port column: {endpoint_hex[:60]!r}')
    return decode_address(address_hex), int(port_hex, 16)
