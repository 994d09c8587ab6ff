#!/usr/bin/env python3
"""Fetches URL and parses it with the Prometheus client library's
text-format parser. Prints JSON: a list of samples
{"family", "type", "name", "labels", "value"}. Usage: metrics_parse.py URL"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

text = urllib.request.urlopen(sys.argv[1], timeout=20).read().decode("utf-8")
out = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        out.append(
            {
                "family": family.name,
                "type": family.type,
                "name": s.name,
                "labels": s.labels,
                "value": s.value,
            }
        )
print(json.dumps(out))
