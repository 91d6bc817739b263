// Test rules for relayguard's YARA check: one per action, triggered by harmless marker strings.

rule Block_Marker {
  meta:
    action = "reject"
    description = "a marker the tests use for a rejecting rule"
  strings:
    $marker = "RELAYGUARD-TEST-BLOCK"
  condition:
    $marker
}

rule Hold_Marker {
  meta:
    action = "quarantine"
  strings:
    $marker = "RELAYGUARD-TEST-HOLD"
  condition:
    $marker
}

rule Tag_Marker {
  meta:
    action = "tag"
  strings:
    $marker = "RELAYGUARD-TEST-TAG"
  condition:
    $marker
}
