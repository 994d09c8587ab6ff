#!/usr/bin/env python3
"""Parses every line of FILE as an RFC 5424 syslog message, following the
RFC's ABNF (section 6), independently of the appliance's formatter. Prints
a JSON list of the parsed messages; exits 1 naming the first line that
does not parse. Usage: rfc5424.py FILE"""
import json
import re
import sys

PRINTUSASCII = r"[\x21-\x7e]"
SD_NAME = r"[!#-<>-\\\^-~]{1,32}"  # PRINTUSASCII except '=', ' ', ']', '"'
PARAM_VALUE = r'(?:[^"\\\]]|\\["\\\]])*'
SD_PARAM = rf'{SD_NAME}="{PARAM_VALUE}"'
SD_ELEMENT = rf"\[{SD_NAME}(?: {SD_PARAM})*\]"
TIMESTAMP = (
    r"-|\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"T(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d{1,6})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
LINE = re.compile(
    rf"^<(?P<pri>\d{{1,3}})>(?P<version>[1-9]\d{{0,2}}) "
    rf"(?P<timestamp>{TIMESTAMP}) "
    rf"(?P<hostname>-|{PRINTUSASCII}{{1,255}}) "
    rf"(?P<app>-|{PRINTUSASCII}{{1,48}}) "
    rf"(?P<procid>-|{PRINTUSASCII}{{1,128}}) "
    rf"(?P<msgid>-|{PRINTUSASCII}{{1,32}}) "
    rf"(?P<sd>-|(?:{SD_ELEMENT})+)"
    rf"(?: (?P<msg>.*))?$"
)


def parse(line):
    m = LINE.match(line)
    if not m or int(m["pri"]) > 191:
        return None
    d = m.groupdict()
    d["facility"], d["severity"] = divmod(int(d["pri"]), 8)
    d["params"] = dict(re.findall(r'(\S+?)="((?:[^"\\]|\\.)*)"', d["sd"]))
    return d


out = []
with open(sys.argv[1], encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
        line = line.rstrip("\n")
        d = parse(line)
        if d is None:
            print(f"line {n} is not RFC 5424: {line!r}", file=sys.stderr)
            sys.exit(1)
        out.append(d)
print(json.dumps(out))
