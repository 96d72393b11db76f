/* RTP reception statistics (RFC 3550 A.1, A.3, A.8) and the stream score
 * (see rtp_stats.h). */
#include "rtp_stats.h"

#include <string.h>

void sfu_rtp_stats_init(sfu_rtp_stats_t *s, uint32_t clock_rate)
{
    memset(s, 0, sizeof(*s));
    s->clock_rate = clock_rate;
}

static void init_seq(sfu_rtp_stats_t *s, uint16_t seq)
{
    s->base_seq = seq;
    s->max_seq = seq;
    s->bad_seq = SFU_RTP_SEQ_MOD + 1; /* so seq == bad_seq is false */
    s->cycles = 0;
    s->received = 0;
    s->received_prior = 0;
    s->expected_prior = 0;
}

/* RFC 3550 A.1 update_seq. */
static int update_seq(sfu_rtp_stats_t *s, uint16_t seq)
{
    uint16_t udelta = (uint16_t)(seq - s->max_seq);

    if (s->probation) {
        /* packet is in sequence */
        if (seq == (uint16_t)(s->max_seq + 1)) {
            s->probation--;
            s->max_seq = seq;
            if (s->probation == 0) {
                init_seq(s, seq);
                s->received++;
                return 1;
            }
        } else {
            s->probation = SFU_RTP_MIN_SEQUENTIAL - 1;
            s->max_seq = seq;
        }
        return 0;
    } else if (udelta < SFU_RTP_MAX_DROPOUT) {
        /* in order, with permissible gap */
        if (seq < s->max_seq)
            s->cycles += SFU_RTP_SEQ_MOD; /* sequence number wrapped */
        s->max_seq = seq;
    } else if (udelta <= SFU_RTP_SEQ_MOD - SFU_RTP_MAX_MISORDER) {
        /* the sequence number made a very large jump */
        if (seq == s->bad_seq) {
            /* two sequential packets: assume the other side restarted
             * without telling us, so just re-sync */
            init_seq(s, seq);
        } else {
            s->bad_seq = (seq + 1) & (SFU_RTP_SEQ_MOD - 1);
            return 0;
        }
    } else {
        /* duplicate or reordered packet */
    }
    s->received++;
    return 1;
}

int sfu_rtp_stats_update(sfu_rtp_stats_t *s, uint16_t seq, uint32_t rtp_ts, uint64_t arrival_ms)
{
    if (!s->started) {
        s->started = 1;
        init_seq(s, seq);
        s->max_seq = (uint16_t)(seq - 1);
        s->probation = SFU_RTP_MIN_SEQUENTIAL;
    }
    if (!update_seq(s, seq))
        return 0;

    /* A.8: arrival in RTP timestamp units; differences are taken mod 2^32. */
    uint32_t arrival = (uint32_t)(arrival_ms * (uint64_t)s->clock_rate / 1000u);
    uint32_t transit = arrival - rtp_ts;
    if (s->have_transit) {
        int32_t d = (int32_t)(transit - s->transit);
        uint32_t ad = d < 0 ? (uint32_t)(-(int64_t)d) : (uint32_t)d;
        /* J += (|D| - J) / 16, in x16 fixed point */
        s->jitter_q4 += ad - ((s->jitter_q4 + 8) >> 4);
    }
    s->transit = transit;
    s->have_transit = 1;
    return 1;
}

uint32_t sfu_rtp_stats_ext_highest_seq(const sfu_rtp_stats_t *s)
{
    return s->cycles + s->max_seq;
}

uint32_t sfu_rtp_stats_expected(const sfu_rtp_stats_t *s)
{
    if (!s->started || s->probation)
        return 0;
    return sfu_rtp_stats_ext_highest_seq(s) - s->base_seq + 1;
}

uint32_t sfu_rtp_stats_received(const sfu_rtp_stats_t *s)
{
    return s->received;
}

int64_t sfu_rtp_stats_packets_lost(const sfu_rtp_stats_t *s)
{
    return (int64_t)sfu_rtp_stats_expected(s) - (int64_t)s->received;
}

uint32_t sfu_rtp_stats_jitter(const sfu_rtp_stats_t *s)
{
    return s->jitter_q4 >> 4;
}

uint32_t sfu_rtp_stats_jitter_ms(const sfu_rtp_stats_t *s)
{
    if (s->clock_rate == 0)
        return 0;
    return (uint32_t)((uint64_t)sfu_rtp_stats_jitter(s) * 1000u / s->clock_rate);
}

int sfu_rtp_stats_report_block(sfu_rtp_stats_t *s, uint32_t ssrc, uint64_t now_ms, uint32_t lsr,
                               uint64_t last_sr_arrival_ms, sfu_stats_block_t *out)
{
    memset(out, 0, sizeof(*out));
    out->ssrc = ssrc;
    out->lsr = lsr;
    if (lsr != 0 && now_ms >= last_sr_arrival_ms) {
        uint64_t d = (now_ms - last_sr_arrival_ms) * 65536u / 1000u;
        out->dlsr = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    }
    if (!s->started || s->probation)
        return 0;

    uint32_t expected = sfu_rtp_stats_expected(s);
    int64_t lost = (int64_t)expected - (int64_t)s->received;
    if (lost > 0x7fffff)
        lost = 0x7fffff;
    else if (lost < -0x800000)
        lost = -0x800000;
    uint32_t expected_interval = expected - s->expected_prior;
    s->expected_prior = expected;
    uint32_t received_interval = s->received - s->received_prior;
    s->received_prior = s->received;
    int64_t lost_interval = (int64_t)expected_interval - (int64_t)received_interval;
    uint8_t fraction;
    if (expected_interval == 0 || lost_interval <= 0)
        fraction = 0;
    else
        fraction = (uint8_t)(((uint64_t)lost_interval << 8) / expected_interval);
    s->last_fraction_lost = fraction;
    s->last_expected_interval = expected_interval;

    out->fraction_lost = fraction;
    out->cumulative_lost = (int32_t)lost;
    out->ext_highest_seq = sfu_rtp_stats_ext_highest_seq(s);
    out->jitter = sfu_rtp_stats_jitter(s);
    return 1;
}

int sfu_stream_score(uint8_t fraction_lost_recent, uint32_t expected_recent, uint32_t repaired_recent)
{
    double loss = fraction_lost_recent / 256.0;
    if (expected_recent > 0) {
        double lost = loss * expected_recent - (double)repaired_recent;
        if (lost < 0)
            lost = 0;
        loss = lost / expected_recent;
    }
    if (loss > 1)
        loss = 1;
    double d = 1.0 - loss;
    double score = 10.0 * d * d * d * d;
    int v = (int)(score + 0.5);
    return v < 0 ? 0 : v > 10 ? 10 : v;
}

int sfu_rtp_stats_score(const sfu_rtp_stats_t *s, uint32_t repaired_recent)
{
    return sfu_stream_score(s->last_fraction_lost, s->last_expected_interval, repaired_recent);
}
