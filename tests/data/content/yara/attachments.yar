// Rules on the externals relayguard sets for every part.

rule Macro_Document_Attachment {
  meta:
    action = "tag"
    description = "an Office document with macros, by its file name"
  condition:
    is_attachment and filename matches /\.(docm|xlsm|pptm)$/i
}

rule Executable_In_Archive {
  meta:
    description = "a Windows executable inside an archive (default action)"
  condition:
    uint16(0) == 0x5A4D and part_path contains "/"
}
