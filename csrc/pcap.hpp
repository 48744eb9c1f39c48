// pcap / pcapng record walker over an in-memory byte range (an mmap or a buffer).
//
// Every read of the input is bounds-checked. File-level damage (bad magic, a truncated file
// header, an absurd record length, a pcapng block whose length is invalid or disagrees with
// its trailer) throws CaptureFault with the byte offset; packet-level damage (a last record
// cut short, caplen over the snaplen, an unknown interface) is counted per reason and the
// walk goes on. No Python here: a libFuzzer harness can include this header directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace pytrafgen {

inline uint16_t rd_be16(const uint8_t* p) { return uint16_t(uint16_t(p[0]) << 8 | p[1]); }
inline uint32_t rd_be32(const uint8_t* p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint16_t rd_le16(const uint8_t* p) { return uint16_t(uint16_t(p[1]) << 8 | p[0]); }
inline uint32_t rd_le32(const uint8_t* p) {
    return uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0];
}

// File-level damage: the walk cannot go on past `offset`.
class CaptureFault : public std::runtime_error {
public:
    CaptureFault(uint64_t at, const std::string& reason) : std::runtime_error(reason), offset(at) {}
    uint64_t offset;
};

// Records that could not become a packet row, by reason (counted, never fatal).
enum SkipReason : int {
    kSkipTruncatedRecord = 0,   // the file ends inside a record (capture cut short)
    kSkipCaplenOverSnaplen,     // captured length larger than the interface snaplen
    kSkipCaplenTooLarge,        // captured length over kMaxCaplen inside an intact block
    kSkipUnknownInterface,      // pcapng packet for an interface no IDB described
    kSkipCount
};
inline const char* skip_reason_name(int reason) {
    static const char* const names[kSkipCount] = {"truncated_record", "caplen_exceeds_snaplen",
                                                  "caplen_too_large", "unknown_interface"};
    return (reason >= 0 && reason < kSkipCount) ? names[reason] : "unknown";
}

// Larger captured lengths are treated as corrupt framing (libpcap uses the same bound).
constexpr uint32_t kMaxCaplen = 256 * 1024;

struct RawRecord {
    const uint8_t* frame = nullptr;
    uint64_t file_offset = 0;  // offset of the record/block header
    int64_t ts_ns = 0;
    uint32_t caplen = 0;
    uint32_t wirelen = 0;
    uint16_t linktype = 0;
    uint16_t iface = 0;
    // The block's first opt_comment (UTF-8, not terminated) when the walker was asked for
    // comments (set_read_comments), else nullptr / 0. Points into the input.
    const uint8_t* comment = nullptr;
    uint16_t comment_len = 0;
};

enum class CaptureFormat { kPcap, kPcapng };

class RecordWalker {
public:
    RecordWalker(const uint8_t* data, size_t size) : p_(data), n_(size) {
        if (size == 0) throw CaptureFault(0, "empty file");
        if (size < 4) throw CaptureFault(0, "file too short for a capture header");
        uint32_t magic_le = rd_le32(p_);
        if (magic_le == 0x0A0D0D0Au) {
            format_ = CaptureFormat::kPcapng;
            return;  // the section header block is read by next()
        }
        switch (magic_le) {
            case 0xA1B2C3D4u: big_ = false; nano_ = false; break;
            case 0xA1B23C4Du: big_ = false; nano_ = true; break;
            case 0xD4C3B2A1u: big_ = true; nano_ = false; break;
            case 0x4D3CB2A1u: big_ = true; nano_ = true; break;
            default: throw CaptureFault(0, "bad magic: not a pcap or pcapng file");
        }
        if (size < 24) throw CaptureFault(0, "truncated pcap file header");
        snaplen_ = u32(p_ + 16);
        // The upper bits of the link-type field carry FCS information, not the type.
        linktype_ = uint16_t(u32(p_ + 20) & 0xFFFFu);
        off_ = 24;
    }

    CaptureFormat format() const { return format_; }
    uint64_t offset() const { return off_; }
    bool done() const { return off_ >= n_; }
    const uint64_t* skipped() const { return skipped_; }
    // Also parse each EPB/OPB's options for its opt_comment (off by default: the packet
    // path does not pay for options it does not need).
    void set_read_comments(bool on) { read_comments_ = on; }

    // Fills `rec` with the next packet record and returns true, or returns false at the end.
    bool next(RawRecord& rec) {
        return format_ == CaptureFormat::kPcap ? next_pcap(rec) : next_pcapng(rec);
    }

private:
    struct Iface {
        uint16_t linktype = 0;
        uint32_t snaplen = 0;
        bool pow2 = false;     // resolution 2^-shift seconds, else 10^-exp10
        uint32_t shift = 0;
        uint64_t mul = 1000;   // base-10 resolution: ns = ts * mul / div
        uint64_t div = 1;
        // if_tsoffset in ns. Hardening (issue 9): 128-bit, because seconds * 10^9 overflowed
        // int64 (UB) for offsets a hostile IDB may carry; scale_ts saturates the sum instead.
        __int128 offset_ns = 0;
    };

    uint16_t u16(const uint8_t* p) const { return big_ ? rd_be16(p) : rd_le16(p); }
    uint32_t u32(const uint8_t* p) const { return big_ ? rd_be32(p) : rd_le32(p); }

    bool end_truncated() {
        ++skipped_[kSkipTruncatedRecord];
        off_ = n_;
        return false;
    }

    bool next_pcap(RawRecord& rec) {
        for (;;) {
            if (off_ >= n_) return false;
            if (n_ - off_ < 16) return end_truncated();
            const uint8_t* h = p_ + off_;
            uint32_t sec = u32(h), frac = u32(h + 4), caplen = u32(h + 8), wirelen = u32(h + 12);
            if (caplen > kMaxCaplen)
                throw CaptureFault(off_, "record caplen " + std::to_string(caplen) +
                                             " exceeds 262144: corrupt record header");
            if (n_ - off_ - 16 < caplen) return end_truncated();
            uint64_t at = off_;
            off_ += 16 + uint64_t(caplen);
            if (snaplen_ != 0 && caplen > snaplen_) {
                ++skipped_[kSkipCaplenOverSnaplen];
                continue;
            }
            rec.frame = h + 16;
            rec.file_offset = at;
            rec.ts_ns = int64_t(sec) * 1000000000 + int64_t(frac) * (nano_ ? 1 : 1000);
            rec.caplen = caplen;
            rec.wirelen = wirelen;
            rec.linktype = linktype_;
            rec.iface = 0;
            return true;
        }
    }

    static int64_t scale_ts(const Iface& f, uint64_t ts) {
        __int128 ns;
        if (f.pow2)
            ns = (__int128(ts) * 1000000000) >> f.shift;
        else
            ns = __int128(ts) * f.mul / __int128(f.div);
        ns += f.offset_ns;
        const __int128 lo = INT64_MIN, hi = INT64_MAX;
        return int64_t(ns < lo ? lo : ns > hi ? hi : ns);
    }

    void read_section_header(uint64_t at, uint32_t body_len) {
        const uint8_t* b = p_ + at + 8;
        if (body_len < 16) throw CaptureFault(at, "pcapng section header block too short");
        if (u16(b + 4) != 1)
            throw CaptureFault(at, "unsupported pcapng major version " + std::to_string(u16(b + 4)));
        ifaces_.clear();
    }

    void read_interface(uint64_t at, uint32_t body_len) {
        const uint8_t* b = p_ + at + 8;
        if (body_len < 8) throw CaptureFault(at, "pcapng interface description block too short");
        Iface f;
        f.linktype = u16(b);
        f.snaplen = u32(b + 4);
        // Options: code u16, length u16, value padded to 4 bytes; malformed ones end the list.
        size_t o = 8;
        while (body_len - o >= 4) {
            uint16_t code = u16(b + o), len = u16(b + o + 2);
            if (code == 0 || len > body_len - o - 4) break;
            const uint8_t* v = b + o + 4;
            if (code == 9 && len >= 1) {  // if_tsresol
                uint32_t e = v[0] & 0x7Fu;
                if (v[0] & 0x80u) {
                    if (e > 63) throw CaptureFault(at, "unsupported if_tsresol 2^-" + std::to_string(e));
                    f.pow2 = true;
                    f.shift = e;
                } else {
                    if (e > 18) throw CaptureFault(at, "unsupported if_tsresol 10^-" + std::to_string(e));
                    uint64_t p10 = 1;
                    for (uint32_t i = 0; i < (e <= 9 ? 9 - e : e - 9); ++i) p10 *= 10;
                    f.mul = e <= 9 ? p10 : 1;
                    f.div = e <= 9 ? 1 : p10;
                }
            } else if (code == 14 && len >= 8) {  // if_tsoffset, seconds
                uint64_t first = u32(v), second = u32(v + 4);  // a 64-bit value in section order
                uint64_t s = big_ ? (first << 32 | second) : (second << 32 | first);
                f.offset_ns = __int128(int64_t(s)) * 1000000000;
            }
            o += 4 + ((size_t(len) + 3) & ~size_t(3));
        }
        ifaces_.push_back(f);
    }

    // One packet block (EPB, OPB, SPB) → rec; returns false if it was counted as skipped.
    bool read_packet(uint32_t type, uint64_t at, uint32_t body_len, RawRecord& rec) {
        const uint8_t* b = p_ + at + 8;
        uint32_t iface, caplen, wirelen;
        uint64_t ts = 0;
        const uint8_t* frame;
        if (type == 3) {  // simple packet block: interface 0, no timestamp
            if (body_len < 4) throw CaptureFault(at, "pcapng simple packet block too short");
            iface = 0;
            wirelen = u32(b);
            caplen = wirelen < body_len - 4 ? wirelen : body_len - 4;
            if (!ifaces_.empty() && ifaces_[0].snaplen != 0 && caplen > ifaces_[0].snaplen)
                caplen = ifaces_[0].snaplen;
            frame = b + 4;
        } else {
            if (body_len < 20) throw CaptureFault(at, "pcapng packet block too short");
            if (type == 6) {
                iface = u32(b);
            } else {  // obsolete packet block: u16 interface, u16 drops
                iface = u16(b);
            }
            ts = uint64_t(u32(b + 4)) << 32 | u32(b + 8);
            caplen = u32(b + 12);
            wirelen = u32(b + 16);
            if (caplen > body_len - 20)
                throw CaptureFault(at, "pcapng packet block: captured length " + std::to_string(caplen) +
                                           " exceeds the block");
            frame = b + 20;
        }
        rec.comment = nullptr;
        rec.comment_len = 0;
        if (read_comments_ && type != 3) {
            // Options follow the frame padded to 4 bytes; caplen <= body_len - 20 was checked,
            // and the padding may reach past the body (then there are no options).
            size_t first = 20 + ((size_t(caplen) + 3) & ~size_t(3));
            if (first <= body_len) find_comment(b + first, body_len - first, rec);
        }
        if (iface >= ifaces_.size()) {
            ++skipped_[kSkipUnknownInterface];
            return false;
        }
        const Iface& f = ifaces_[iface];
        if (caplen > kMaxCaplen) {
            ++skipped_[kSkipCaplenTooLarge];
            return false;
        }
        if (f.snaplen != 0 && caplen > f.snaplen) {
            ++skipped_[kSkipCaplenOverSnaplen];
            return false;
        }
        rec.frame = frame;
        rec.file_offset = at;
        rec.ts_ns = type == 3 ? 0 : scale_ts(f, ts);
        rec.caplen = caplen;
        rec.wirelen = wirelen;
        rec.linktype = f.linktype;
        rec.iface = uint16_t(iface);
        return true;
    }

    // The first opt_comment (code 1) of an option list of `len` bytes at `o`. A malformed
    // list (an option running past the block) ends the search, as in read_interface.
    void find_comment(const uint8_t* o, size_t len, RawRecord& rec) const {
        size_t at = 0;
        while (at + 4 <= len) {  // not len - at: a padded value may step past len
            uint16_t code = u16(o + at), vlen = u16(o + at + 2);
            if (code == 0 || vlen > len - at - 4) return;
            if (code == 1) {
                rec.comment = o + at + 4;
                rec.comment_len = vlen;
                return;
            }
            at += 4 + ((size_t(vlen) + 3) & ~size_t(3));
        }
    }

    bool next_pcapng(RawRecord& rec) {
        for (;;) {
            if (off_ >= n_) return false;
            if (n_ - off_ < 12) return end_truncated();
            const uint8_t* h = p_ + off_;
            uint32_t type = rd_le32(h);
            if (type == 0x0A0D0D0Au) {  // byte-order magic decides this section's byte order
                uint32_t bom = rd_le32(h + 8);
                if (bom == 0x1A2B3C4Du) big_ = false;
                else if (bom == 0x4D3C2B1Au) big_ = true;
                else throw CaptureFault(off_, "bad pcapng byte-order magic");
            } else if (!seen_section_) {
                throw CaptureFault(off_, "pcapng file does not start with a section header block");
            } else {
                type = u32(h);
            }
            uint32_t len = u32(h + 4);
            if (len < 12 || len % 4 != 0)
                throw CaptureFault(off_, "pcapng block length " + std::to_string(len) + " is invalid");
            if (len > n_ - off_) return end_truncated();
            uint32_t trailer = u32(h + len - 4);
            if (trailer != len)
                throw CaptureFault(off_, "pcapng block length " + std::to_string(len) +
                                             " disagrees with its trailer " + std::to_string(trailer));
            uint64_t at = off_;
            uint32_t body_len = len - 12;
            off_ += len;
            switch (type) {
                case 0x0A0D0D0Au: read_section_header(at, body_len); seen_section_ = true; break;
                case 1: read_interface(at, body_len); break;
                case 2: case 3: case 6:
                    if (read_packet(type, at, body_len, rec)) return true;
                    break;
                default: break;  // name resolution, statistics, custom blocks: not packets
            }
        }
    }

    const uint8_t* p_;
    size_t n_;
    uint64_t off_ = 0;
    CaptureFormat format_ = CaptureFormat::kPcap;
    bool big_ = false;
    bool nano_ = false;
    bool seen_section_ = false;
    bool read_comments_ = false;
    uint32_t snaplen_ = 0;
    uint16_t linktype_ = 0;
    std::vector<Iface> ifaces_;
    uint64_t skipped_[kSkipCount] = {};
};

}  // namespace pytrafgen
