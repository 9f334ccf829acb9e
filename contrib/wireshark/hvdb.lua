-- hvdb.lua: a Wireshark/tshark dissector for hv-emu's network update packets.
--
-- The wire format is docs/PROTOCOL.md (the source of truth): a 32-byte common header, then a
-- MANIFEST (the signed 80-byte bundle header, FEC parameters, the bundle signature, page hashes
-- and the manifest signature), a HASHPAGE (SHA-256 values) or a SYMBOL (RaptorQ FEC Payload ID
-- and symbol data). All integers are big-endian.
--
--   tshark -X lua_script:contrib/wireshark/hvdb.lua -r capture.pcap -V
--   tshark -X lua_script:contrib/wireshark/hvdb.lua -r capture.pcap -Y 'hvdb.type == 1'
--
-- A stateless dissector cannot tell a forged symbol from a genuine one (that takes the verified
-- manifest); it flags what the receiver's stateless checks would drop.

local hvdb = Proto("hvdb", "hv-emu signature-database update")

local HEADER_LEN = 32
local BUNDLE_HEADER_LEN = 80
local FEC_LEN = 16
-- commitments: SHA-256 truncated to 16 bytes (hash_alg 2)
local HASH_LEN = 16
local WORK_LEN = 8
local SIG_LEN = { [1] = 64, [2] = 384 }
local UPDATE_PORT = 0xDB00

local types = { [1] = "MANIFEST", [2] = "HASHPAGE", [3] = "SYMBOL" }
local sig_algs = { [1] = "Ed25519", [2] = "RSA-PSS-3072-SHA256" }
local contents = { [1] = "ClamAV .db", [2] = "ClamAV .ndb" }

local f = hvdb.fields
f.magic = ProtoField.string("hvdb.magic", "Magic")
f.version = ProtoField.uint8("hvdb.version", "Protocol version")
f.type = ProtoField.uint8("hvdb.type", "Type", base.DEC, types)
f.flags = ProtoField.uint16("hvdb.flags", "Flags", base.HEX)
f.update_id = ProtoField.uint32("hvdb.update_id", "Update id", base.HEX)
f.db_version = ProtoField.uint64("hvdb.db_version", "Database version")
f.index = ProtoField.uint32("hvdb.index", "Index")
f.count = ProtoField.uint32("hvdb.count", "Count")
f.payload_len = ProtoField.uint16("hvdb.payload_len", "Payload length")
f.reserved = ProtoField.uint16("hvdb.reserved", "Reserved", base.HEX)
f.issued_at = ProtoField.uint64("hvdb.issued_at", "Issued at (Unix s)")
f.expires_at = ProtoField.uint64("hvdb.expires_at", "Expires at (Unix s)")
f.key_id = ProtoField.bytes("hvdb.key_id", "Key id")
f.sig_alg = ProtoField.uint8("hvdb.sig_alg", "Signature algorithm", base.DEC, sig_algs)
f.content_type = ProtoField.uint8("hvdb.content_type", "Content type", base.DEC, contents)
f.body_len = ProtoField.uint32("hvdb.body_len", "Body length")
f.body_sha256 = ProtoField.bytes("hvdb.body_sha256", "Body SHA-256")
f.fec_scheme = ProtoField.uint8("hvdb.fec_scheme", "FEC scheme")
f.hash_alg = ProtoField.uint8("hvdb.hash_alg", "Hash algorithm")
f.page_count = ProtoField.uint16("hvdb.page_count", "Hash pages")
f.symbol_size = ProtoField.uint32("hvdb.symbol_size", "Symbol size T")
f.symbol_count = ProtoField.uint32("hvdb.symbol_count", "Symbols N")
f.block_source = ProtoField.uint16("hvdb.block_source", "Source symbols per block K_b")
f.block_count = ProtoField.uint16("hvdb.block_count", "Source blocks Z")
f.bundle_sig = ProtoField.bytes("hvdb.bundle_signature", "Bundle signature")
f.page_hash = ProtoField.bytes("hvdb.page_hash", "Page commitment")
f.manifest_sig = ProtoField.bytes("hvdb.manifest_signature", "Manifest signature")
f.work = ProtoField.bytes("hvdb.work", "Work stamp (unsigned)")
f.symbol_hash = ProtoField.bytes("hvdb.symbol_hash", "Symbol commitment")
f.sbn = ProtoField.uint8("hvdb.sbn", "Source block number")
f.esi = ProtoField.uint24("hvdb.esi", "Encoding symbol id")
f.data = ProtoField.bytes("hvdb.data", "Symbol data")

local e_truncated = ProtoExpert.new("hvdb.truncated", "Truncated", expert.group.MALFORMED,
                                    expert.severity.ERROR)
local e_magic = ProtoExpert.new("hvdb.bad_magic", "Wrong magic", expert.group.MALFORMED,
                                expert.severity.ERROR)
local e_index = ProtoExpert.new("hvdb.index_oob", "index >= count", expert.group.MALFORMED,
                                expert.severity.ERROR)
local e_length = ProtoExpert.new("hvdb.length_mismatch", "payload_len does not match",
                                 expert.group.MALFORMED, expert.severity.ERROR)
hvdb.experts = { e_truncated, e_magic, e_index, e_length }

local function manifest(buf, tree)
    local t = tree:add(buf(0, BUNDLE_HEADER_LEN), "Bundle header (signed)")
    t:add(f.db_version, buf(8, 8))
    t:add(f.issued_at, buf(16, 8))
    t:add(f.expires_at, buf(24, 8))
    t:add(f.key_id, buf(32, 8))
    t:add(f.sig_alg, buf(40, 1))
    t:add(f.content_type, buf(41, 1))
    t:add(f.body_len, buf(44, 4))
    t:add(f.body_sha256, buf(48, 32))
    local at = BUNDLE_HEADER_LEN
    tree:add(f.fec_scheme, buf(at, 1))
    tree:add(f.hash_alg, buf(at + 1, 1))
    tree:add(f.page_count, buf(at + 2, 2))
    tree:add(f.symbol_size, buf(at + 4, 4))
    tree:add(f.symbol_count, buf(at + 8, 4))
    tree:add(f.block_source, buf(at + 12, 2))
    tree:add(f.block_count, buf(at + 14, 2))
    local sig_len = SIG_LEN[buf(40, 1):uint()] or 0
    -- protocol 2: the manifest commits to the M = 2P + 1 page symbols of the page stream, or,
    -- when they do not fit, to the index pages; an 8-byte work stamp ends it
    local pages = 2 * buf(at + 2, 2):uint() + 1
    local max_pages = math.floor((1440 - BUNDLE_HEADER_LEN - FEC_LEN - 2 * sig_len - WORK_LEN)
                                 / HASH_LEN)
    if pages > max_pages then
        pages = math.floor((pages + 87) / 88)
    end
    at = at + FEC_LEN
    if buf:len() < at + 2 * sig_len + HASH_LEN * pages + WORK_LEN then
        return
    end
    tree:add(f.bundle_sig, buf(at, sig_len))
    at = at + sig_len
    for i = 0, pages - 1 do
        tree:add(f.page_hash, buf(at + HASH_LEN * i, HASH_LEN))
    end
    tree:add(f.manifest_sig, buf(at + HASH_LEN * pages, sig_len))
    tree:add(f.work, buf(at + HASH_LEN * pages + sig_len, WORK_LEN))
end

function hvdb.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "HVDB"
    local root = tree:add(hvdb, tvb())
    if tvb:len() < HEADER_LEN then
        root:add_proto_expert_info(e_truncated, "truncated header (" .. tvb:len() .. " < 32)")
        return
    end
    root:add(f.magic, tvb(0, 4))
    if tvb(0, 4):string() ~= "HVDB" then
        root:add_proto_expert_info(e_magic)
    end
    root:add(f.version, tvb(4, 1))
    root:add(f.type, tvb(5, 1))
    root:add(f.flags, tvb(6, 2))
    root:add(f.update_id, tvb(8, 4))
    root:add(f.db_version, tvb(12, 8))
    root:add(f.index, tvb(20, 4))
    root:add(f.count, tvb(24, 4))
    root:add(f.payload_len, tvb(28, 2))
    root:add(f.reserved, tvb(30, 2))
    local kind, index, count = tvb(5, 1):uint(), tvb(20, 4):uint(), tvb(24, 4):uint()
    local plen = tvb(28, 2):uint()
    pinfo.cols.info = string.format("%s uid=0x%08x dbv=%s %d/%d len=%d",
        types[kind] or "UNKNOWN", tvb(8, 4):uint(), tostring(tvb(12, 8):uint64()),
        index, count, plen)
    if index >= count then
        root:add_proto_expert_info(e_index)
    end
    if HEADER_LEN + plen ~= tvb:len() then
        root:add_proto_expert_info(e_length)
        return
    end
    local payload = tvb(HEADER_LEN, plen):tvb()
    if kind == 1 and plen >= BUNDLE_HEADER_LEN + FEC_LEN then
        manifest(payload, root)
    elseif kind == 2 then
        for i = 0, math.floor(plen / HASH_LEN) - 1 do
            root:add(f.symbol_hash, payload(HASH_LEN * i, HASH_LEN))
        end
    elseif kind == 3 and plen >= 4 then
        root:add(f.sbn, payload(0, 1))
        root:add(f.esi, payload(1, 3))
        root:add(f.data, payload(4))
    end
end

DissectorTable.get("udp.port"):add(UPDATE_PORT, hvdb)
