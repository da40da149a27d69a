"""The translate tools take a multi-file project (files, include_dirs, defines) as well as source."""

from __future__ import annotations

from mcp_bridge.manifest import build_manifest


def test_both_translate_tools_advertise_files_include_dirs_and_defines():
    tools = {t["name"]: t for t in build_manifest()["tools"]}
    for name in ("translate_kernel", "translate_kernel_gpu"):
        props = tools[name]["input_schema"]["properties"]
        assert {"source", "files", "include_dirs", "defines"} <= set(props), name
        assert "files" not in tools[name]["input_schema"].get("required", [])
    assert "files" not in tools["profile_kernels"]["input_schema"]["properties"]
