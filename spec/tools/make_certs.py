#!/usr/bin/env python3
"""Regenerate spec/vectors/certs.json (stdlib only; run from the repository root).

The vectors are written out by hand here (entry fields, payloads) from peers.md §4 and the
rules of spec/tables/certs.toml; the expectations are reasoned per vector, not computed by
ghcb. Run: python3 spec/tools/make_certs.py
"""

import json
VCEK="63da758de6644564adc5f4b93be8accd"; VLEK="a8074bc2a25a483eaae639c045a0b8a1"; ASK="4ab7b379bbac4fe4a02f05aef327c782"; ARK="c0b406a4a803495297433fb6014cd0ae"; CRL="92f81bc358114d3d97ffd19f88dc67ea"
T="00"*24
def e(g,o,l): return g + o.to_bytes(4,'little').hex() + l.to_bytes(4,'little').hex()
virtee = e(ARK,0x78,25)+e(ASK,0x91,25)+e(VCEK,0xaa,15)+e("fbb6ed74e73e44ab88934252792d737a",0xb9,6)+T+"01"*25+"02"*25+"05"*15+"07"*6
gsg = e(ARK,0x90,3)+e(ASK,0x93,3)+e(VCEK,0x96,4)+e(VLEK,0x9a,4)+e("000000000000c0de0000000000000000",0x9e,5)+T+b"arkaskvcekvlekextra".hex()
assert len(bytes.fromhex(virtee))==191 and len(bytes.fromhex(gsg))==163
V=[]
def vec(name, desc, parts, expect, source=None):
    d={"name":name,"description":desc,"parts":parts,"expect":expect}
    if source: d["source"]=source
    V.append(d)
vec("virtee_uapi_to_vec_bytes","virtee/sev test_uapi_to_vec_bytes: ARK, ASK, VCEK and an OTHER GUID with filler payloads",[{"hex":virtee}],
    {"size":191,"entries":[{"name":"ARK","offset":120,"length":25},{"name":"ASK","offset":145,"length":25},{"name":"VCEK","offset":170,"length":15},{"name":None,"guid":"fbb6ed74-e73e-44ab-8893-4252792d737a","offset":185,"length":6}],
     "violations":[["unknown-guid",72],["not-x509",120],["not-x509",145],["not-x509",170]],"strict_error":None},"peers.md §4.1")
vec("go_sev_guest_raw_cert_table","go-sev-guest abi_test.go testRawCertTable: ARK, ASK, VCEK, VLEK and an extra GUID with ASCII payloads",[{"hex":gsg}],
    {"size":163,"entries":[{"name":"ARK","offset":144,"length":3},{"name":"ASK","offset":147,"length":3},{"name":"VCEK","offset":150,"length":4},{"name":"VLEK","offset":154,"length":4},{"name":None,"guid":"00000000-0000-c0de-0000-000000000000","offset":158,"length":5}],
     "violations":[["unknown-guid",96],["not-x509",144],["not-x509",147],["not-x509",150],["not-x509",154]],"strict_error":None},"peers.md §4.2")
vec("empty_table","the empty table KVM writes when it has no certificates and RBX != 0",[{"zeros":24}],
    {"size":24,"entries":[],"violations":[],"strict_error":None},"ghcb-facts.md §6")
vec("page_padded","go-sev-guest's table zero-padded to one page, as a guest's buffer holds it",[{"hex":gsg},{"zeros":4096-163}],
    {"size":4096,"entries":[{"name":"ARK","offset":144,"length":3},{"name":"ASK","offset":147,"length":3},{"name":"VCEK","offset":150,"length":4},{"name":"VLEK","offset":154,"length":4},{"name":None,"guid":"00000000-0000-c0de-0000-000000000000","offset":158,"length":5}],
     "violations":[["unknown-guid",96],["not-x509",144],["not-x509",147],["not-x509",150],["not-x509",154]],"strict_error":None},"peers.md §4.4")
vec("u32_wrap","offset 0xfffffffe + length 3 wraps a u32 sum to 1 (go-sev-guest PR #186 panics)",[{"hex":e(VCEK,0xfffffffe,3)+T}],
    {"size":48,"entries_lenient":0,"violations":[["u32-wrap",0],["out-of-bounds",0]],"strict_error":"u32-wrap"},"peers.md §4.4")
amp_unit = e("11"*16, 24, 480-24)
vec("amplification_480","every entry names the whole blob after the first entry, and there is no terminator (dstack PR #1248 shape, L = 480)",[{"repeat":amp_unit,"count":20}],
    {"size":480,"entries_lenient":0,"violation_codes":["duplicate-guid","missing-terminator","offset-in-header","unknown-guid"],"violation_counts":{"missing-terminator":1,"offset-in-header":17,"duplicate-guid":17,"unknown-guid":17},"strict_error":"missing-terminator"},"peers.md §4.4")
k=100; L=4800; hdr=(k+1)*24
vec("overlap_worst_case","go-sev-guest-style worst case with a terminator: 100 entries with distinct unknown GUIDs, each naming the same 2376 bytes after the header",[{"hex":"".join(e("22"*15+f"{j:02x}",hdr,L-hdr) for j in range(k))},{"zeros":24},{"repeat":"ab","count":L-hdr}],
    {"size":L,"entries_lenient":0,"violation_codes":["overlap","unknown-guid"],"violation_counts":{"overlap":17,"unknown-guid":17},"strict_error":"overlap"},"peers.md §4.4")
vec("zero_guid_entry","a null-GUID entry with data, then a VCEK entry: readers that stop at a null GUID (virtee) lose the VCEK",[{"hex":e("00"*16,72,4)+e(VCEK,76,4)+T+"01020304"+"05060708"}],
    {"size":80,"entries_lenient":1,"violations":[["zero-guid-entry",0],["not-x509",76]],"strict_error":"zero-guid-entry"},"peers.md §4.4")
vec("missing_terminator","one entry and no terminator",[{"hex":e(VCEK,24,4)+"01020304"}],
    {"size":28,"entries_lenient":0,"violations":[["missing-terminator",24],["offset-in-header",0]],"strict_error":"missing-terminator"})
vec("truncated_entry","30 bytes: one entry and six bytes of a second",[{"hex":e(VCEK,0,0)+"000000000000"}],
    {"size":30,"entries_lenient":1,"violations":[["missing-terminator",24],["zero-length",0]],"strict_error":"missing-terminator"})
vec("offset_in_header","the entry's data starts inside the entry array",[{"hex":e(VCEK,8,16)+T}],
    {"size":48,"entries_lenient":0,"violations":[["offset-in-header",0]],"strict_error":"offset-in-header"})
vec("overlap","two GUIDs name overlapping ranges",[{"hex":e(VCEK,72,8)+e(ARK,76,8)+T+"11"*12}],
    {"size":84,"entries_lenient":0,"violations":[["overlap",0],["overlap",24]],"strict_error":"overlap"})
vec("duplicate_guid","two VCEK entries with distinct data",[{"hex":e(VCEK,72,2)+e(VCEK,74,2)+T+"aabbccdd"}],
    {"size":76,"entries_lenient":1,"violations":[["duplicate-guid",24],["not-x509",72]],"strict_error":"duplicate-guid"})
vec("zero_length","an entry with no data is legal but suspicious",[{"hex":e(CRL,48,0)+T}],
    {"size":48,"entries":[{"name":"CRL","offset":48,"length":0}],"violations":[["zero-length",0]],"strict_error":None})
vec("trailing_data","a valid table followed by non-zero bytes that no entry names",[{"hex":e(CRL,48,2)+T+"abcd"+"0000"+"ff"}],
    {"size":53,"entries":[{"name":"CRL","offset":48,"length":2}],"violations":[["trailing-data",52]],"strict_error":None})
vec("short_entry_payload","a VCEK entry shorter than 27 bytes (crashed virtee/sev's PEM sniffing, #376)",[{"hex":e(VCEK,48,5)+T+"3082000102"}],
    {"size":53,"entries":[{"name":"VCEK","offset":48,"length":5}],"violations":[["not-x509",48]],"strict_error":None},"peers.md §4.4")
doc={"description":"Certificate-table vectors. The bytes of a vector are its 'parts' concatenated: {'hex': h} is those bytes, {'zeros': n} n zero bytes, {'repeat': h, 'count': n} h repeated n times. 'entries' (strict parse) list each certificate's name (null = not in the registry, then 'guid' is given), offset and length; 'entries_lenient' is the number of entries a lenient parse keeps. 'violations' are [code, offset] in check_cert_table's order (rules of the table in spec/tables/certs.toml order, each in table order) with the default 16 KiB max_size; where a vector breaks a rule on many entries, 'violation_codes' gives the set of codes and 'violation_counts' how many findings of a code a reader lists (16 plus one summary with offset null). 'strict_error' is the rule a strict parse raises first, or null.",
     "vectors":V}
open("spec/vectors/certs.json","w").write(json.dumps(doc, indent=2)+"\n")
