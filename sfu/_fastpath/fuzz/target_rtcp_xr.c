/* Fuzz target: RTCP XR (src/rtcp_xr.c) and the RTT estimator (src/rtt.c).
 *
 * The input is parsed as one XR packet and as a compound (each XR item of
 * it parsed in place). The RRTR and DLRR sub-blocks found go through a
 * build/parse round trip, and the sub-blocks feed an estimator that
 * "sent" some of their LRRs (so both matching and refusal paths run), at
 * times taken from the input. Any broken invariant aborts. To be
 * registered in targets.c as "rtcp_xr".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/rtcp.h"
#include "../src/rtcp_report.h"
#include "../src/rtcp_xr.h"
#include "../src/rtt.h"
#include "../src/sfu_bytes.h"

int sfu_fuzz_rtcp_xr(const uint8_t *data, size_t size);

#define MAX_SUBS 64

static void check_round_trip(const sfu_xr_info_t *info, const sfu_xr_dlrr_t *subs, int n)
{
    uint8_t out[12 + 12 * MAX_SUBS];
    if (info->nrrtr) {
        int len = sfu_rtcp_build_xr_rrtr(out, sizeof(out), info->sender_ssrc, info->rrtr_ntp);
        sfu_xr_info_t back;
        if (len != SFU_XR_RRTR_PACKET_SIZE || sfu_rtcp_parse_xr(out, (size_t)len, &back, NULL, 0) != 0)
            abort();
        if (back.nrrtr != 1 || back.rrtr_ntp != info->rrtr_ntp || back.sender_ssrc != info->sender_ssrc)
            abort();
    }
    if (n > 0) {
        int len = sfu_rtcp_build_xr_dlrr(out, sizeof(out), info->sender_ssrc, subs, n);
        sfu_xr_dlrr_t again[MAX_SUBS];
        sfu_xr_info_t back;
        if (len != 12 + 12 * n || sfu_rtcp_parse_xr(out, (size_t)len, &back, again, MAX_SUBS) != n)
            abort();
        if (back.ndlrr != n || memcmp(again, subs, sizeof(subs[0]) * (size_t)n) != 0)
            abort();
    }
}

static void feed_estimator(const sfu_xr_info_t *info, const sfu_xr_dlrr_t *subs, int n, const uint8_t *data,
                           size_t size)
{
    sfu_rtt_t r;
    sfu_rtt_init(&r);
    uint64_t now_ms = size >= 4 ? sfu_load_be32(data) : 0;
    /* "send" the LRRs of every other sub-block, and the packet's own RRTR */
    for (int i = 0; i < n; i += 2)
        sfu_rtt_on_rrtr_sent(&r, subs[i].lrr, now_ms + (uint64_t)i * 100);
    if (info->nrrtr)
        sfu_rtt_on_rrtr_sent(&r, sfu_ntp_compact(info->rrtr_ntp), now_ms);
    uint64_t calls = 0;
    for (int i = 0; i < n; i++) {
        /* arrival: the LRR plus the DLRR plus a delay taken from the SSRC field
         * (any value, so negative and huge results happen too) */
        uint32_t now_compact = subs[i].lrr + subs[i].dlrr + (subs[i].ssrc >> (i % 17));
        uint64_t at = now_ms + (uint64_t)(subs[i].ssrc & 0xfffff);
        int a = sfu_rtt_on_dlrr(&r, subs[i].lrr, subs[i].dlrr, now_compact, at);
        int b = sfu_rtt_on_report_block(&r, subs[i].lrr, subs[i].dlrr, now_compact);
        calls += 2;
        if (a > SFU_RTT_MAX_MS * 1000 || b > SFU_RTT_MAX_MS * 1000)
            abort();
        if ((a >= 0 || b >= 0) && sfu_rtt_ms(&r) == 0)
            abort(); /* a sample makes the RTT known */
        if (sfu_rtt_ms(&r) > SFU_RTT_MAX_MS)
            abort();
    }
    if (r.samples + r.rejected > calls)
        abort();
}

static void parse_one(const uint8_t *pkt, size_t len, const uint8_t *data, size_t size)
{
    sfu_xr_info_t info;
    sfu_xr_dlrr_t subs[MAX_SUBS];
    int n = sfu_rtcp_parse_xr(pkt, len, &info, subs, MAX_SUBS);
    if (n < 0)
        return;
    if (n > MAX_SUBS || n != (info.ndlrr < MAX_SUBS ? info.ndlrr : MAX_SUBS))
        abort();
    if (info.nblocks < info.nrrtr + info.nunknown || (size_t)info.nblocks * 4 + 8 > len)
        abort();
    /* the parser with no output array counts the same */
    sfu_xr_info_t bare;
    if (sfu_rtcp_parse_xr(pkt, len, &bare, NULL, 0) != 0 || bare.sender_ssrc != info.sender_ssrc ||
        bare.nrrtr != info.nrrtr || (info.nrrtr && bare.rrtr_ntp != info.rrtr_ntp) || bare.ndlrr != info.ndlrr ||
        bare.nblocks != info.nblocks || bare.nunknown != info.nunknown)
        abort();
    check_round_trip(&info, subs, n);
    feed_estimator(&info, subs, n, data, size);
}

int sfu_fuzz_rtcp_xr(const uint8_t *data, size_t size)
{
    if (size > 70000)
        return 0;
    parse_one(data, size, data, size);
    sfu_rtcp_item_t items[SFU_RTCP_MAX_ITEMS];
    int n = sfu_rtcp_parse_compound(data, size, items, SFU_RTCP_MAX_ITEMS);
    for (int i = 0; i < n; i++)
        if (items[i].packet_type == SFU_RTCP_XR)
            parse_one(data + items[i].offset, items[i].length, data, size);
    return 0;
}
