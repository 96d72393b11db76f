/* RTCP reports (reports.c): the SR we send for each consumer and the RR for
 * each producer stream, once a second in one round for all transports (with
 * the rates), and what the remote's SR and RR tell us. */
#ifndef SFU_REPORTS_H
#define SFU_REPORTS_H

#include "engine.h"

/* The SSRC of the receiver reports (and their XR) we send to publishers:
 * the SFU has none of its own toward them. */
#define SFU_RTCP_RECEIVER_SSRC 1

/* NTP time (RFC 3550 4) of the engine's monotonic now_ms. */
uint64_t sfu_ntp_now(uint64_t now_ms);

/* a publisher's SR clock offset rises only after SRs said so this long */
#define SFU_SR_CLOCK_RISE_AFTER_MS 5000
/* Takes the offset between the wall clock and the monotonic clock. */
void sfu_ntp_init(void);

/* The report round of one transport, when due (timers.h). */
void sfu_reports_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms);
/* A sender report (the packet) from the publisher of a producer stream. */
void sfu_reports_on_sr(sfu_transport_t *t, const uint8_t *pk, size_t len, uint64_t now_ms);
/* The report blocks of an SR or RR, about our consumers' streams (and the
 * transport's RTT from the newest LSR). */
void sfu_reports_on_blocks(sfu_transport_t *t, const uint8_t *pk, size_t len, uint64_t now_ms);
/* An extended report (RFC 3611): the DLRR answers to our RRTRs give the RTT. */
void sfu_reports_on_xr(sfu_transport_t *t, const uint8_t *pk, size_t len, uint64_t now_ms);

#endif
