/*
 * The only C in the iscsi crate: a thin layer over libiscsi (LGPL-2.1+) so that Rust never mirrors
 * libiscsi's structs (struct scsi_task, struct iscsi_data). Rust sees an opaque context and four calls.
 *
 * Every call runs libiscsi's asynchronous API under our own poll() loop with a deadline instead of the
 * *_sync helpers: those loop forever when the target goes silent (their poll timeout does not run
 * libiscsi's timeout processing), so a hung target would hang the caller. Auto-reconnect is switched off
 * for the same reason (it retries in a blocking loop with sleeps); the Rust side reconnects instead.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

/* Return codes besides SCSI status bytes (0..255). */
#define SHIM_ERROR -1   /* libiscsi error: shim_error() says what */
#define SHIM_TIMEOUT -2 /* deadline passed; the session should be dropped */
#define SHIM_POLL -3    /* poll() failed: errno says why */

struct wait_state {
	int done;
	int status;
};

static void done_cb(struct iscsi_context *c, int status, void *command_data, void *private_data)
{
	(void)c;
	(void)command_data;
	struct wait_state *w = private_data;
	w->status = status;
	w->done = 1;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the event loop until w->done or the deadline. */
static int wait_done(struct iscsi_context *c, struct wait_state *w, int timeout_ms)
{
	int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 1);
	while (!w->done) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return SHIM_TIMEOUT;
		struct pollfd pfd = { .fd = iscsi_get_fd(c), .events = iscsi_which_events(c) };
		int r = poll(&pfd, 1, left > 1000 ? 1000 : (int)left);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return SHIM_POLL;
		}
		/* revents 0 still lets libiscsi run its own timers. */
		if (iscsi_service(c, r > 0 ? pfd.revents : 0) < 0)
			return SHIM_ERROR;
	}
	return 0;
}

/*
 * Creates a context and logs in to `target` at `portal` ("host:port"). On failure returns NULL and
 * copies the reason into err (NUL-terminated); *timed_out tells a deadline from other failures.
 */
struct iscsi_context *shim_connect(const char *portal, const char *target, const char *initiator,
				   int timeout_ms, char *err, int errlen, int *timed_out)
{
	*timed_out = 0;
	struct iscsi_context *c = iscsi_create_context(initiator);
	if (!c) {
		snprintf(err, errlen, "cannot create an iSCSI context");
		return NULL;
	}
	iscsi_set_noautoreconnect(c, 1);
	iscsi_set_targetname(c, target);
	iscsi_set_session_type(c, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(c, ISCSI_HEADER_DIGEST_NONE_CRC32C);

	/* Connect and log in without iscsi_full_connect_async: it also sends a TEST UNIT READY that
	 * would swallow a unit attention the caller must see. */
	struct wait_state w = { 0, 0 };
	int rc = iscsi_connect_async(c, portal, done_cb, &w);
	if (rc == 0)
		rc = wait_done(c, &w, timeout_ms);
	if (rc == 0 && w.status == SCSI_STATUS_GOOD) {
		w.done = 0;
		rc = iscsi_login_async(c, done_cb, &w);
		if (rc == 0)
			rc = wait_done(c, &w, timeout_ms);
	}
	if (rc != 0 || w.status != SCSI_STATUS_GOOD) {
		if (rc == SHIM_TIMEOUT) {
			*timed_out = 1;
			snprintf(err, errlen, "no answer within %d ms", timeout_ms);
		} else if (rc == SHIM_POLL) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
		} else {
			snprintf(err, errlen, "%s", iscsi_get_error(c));
		}
		iscsi_destroy_context(c);
		return NULL;
	}
	return c;
}

/* Logs out (bounded by timeout_ms) and frees the context. With timeout_ms 0, just drops the connection. */
void shim_close(struct iscsi_context *c, int timeout_ms)
{
	if (timeout_ms > 0 && iscsi_is_logged_in(c)) {
		struct wait_state w = { 0, 0 };
		if (iscsi_logout_async(c, done_cb, &w) == 0)
			(void)wait_done(c, &w, timeout_ms);
	}
	iscsi_destroy_context(c);
}

/*
 * Runs one CDB on `lun`. dir: 0 none, 1 data in (into buf), 2 data out (from buf).
 * Returns the SCSI status byte (>= 0) or a negative SHIM_* code. *xfer gets the bytes moved (buflen
 * minus residual); on CHECK CONDITION the raw sense is copied into sense[0..*sense_len] (at most
 * sense_cap bytes).
 */
int shim_cmd(struct iscsi_context *c, int lun, const unsigned char *cdb, int cdblen, int dir,
	     unsigned char *buf, int buflen, int timeout_ms, int *xfer, unsigned char *sense,
	     int sense_cap, int *sense_len)
{
	*xfer = 0;
	*sense_len = 0;
	if (cdblen < 1 || cdblen > SCSI_CDB_MAX_SIZE || buflen < 0)
		return SHIM_ERROR;
	int xdir = dir == 1 ? SCSI_XFER_READ : dir == 2 ? SCSI_XFER_WRITE : SCSI_XFER_NONE;
	if (xdir == SCSI_XFER_NONE)
		buflen = 0;

	/* scsi_create_task copies the CDB. */
	struct scsi_task *t = scsi_create_task(cdblen, (unsigned char *)cdb, xdir, buflen);
	if (!t)
		return SHIM_ERROR;
	/* Read straight into the caller's buffer. Without this libiscsi collects data in task->datain,
	 * which it overwrites with the sense on CHECK CONDITION: a tape READ that hits a short block
	 * (ILI) would lose its data. */
	if (xdir == SCSI_XFER_READ && buflen > 0 && scsi_task_add_data_in_buffer(t, buflen, buf) != 0) {
		scsi_free_scsi_task(t);
		return SHIM_ERROR;
	}
	struct iscsi_data out = { .size = (size_t)buflen, .data = buf };
	struct wait_state w = { 0, 0 };
	if (iscsi_scsi_command_async(c, lun, t, done_cb, xdir == SCSI_XFER_WRITE ? &out : NULL, &w) != 0) {
		scsi_free_scsi_task(t);
		return SHIM_ERROR;
	}
	int rc = wait_done(c, &w, timeout_ms);
	if (rc != 0) {
		/* Forget the task (its callback runs now with CANCELLED); the target may still be working on
		 * it, which is why the caller drops this session. */
		if (!w.done)
			iscsi_scsi_cancel_task(c, t);
		scsi_free_scsi_task(t);
		return rc;
	}

	int status = w.status;
	if (status < 0 || status > 0xff) {
		/* SCSI_STATUS_CANCELLED/ERROR/TIMEOUT: no SCSI status came back. */
		scsi_free_scsi_task(t);
		return SHIM_ERROR;
	}
	if (xdir != SCSI_XFER_NONE) {
		size_t moved = (size_t)buflen;
		if (t->residual_status == SCSI_RESIDUAL_UNDERFLOW)
			moved = t->residual < (size_t)buflen ? (size_t)buflen - t->residual : 0;
		*xfer = (int)moved;
	}
	/* On CHECK CONDITION datain holds the sense: a 2-byte big-endian length, then the sense bytes. */
	if (status == SCSI_STATUS_CHECK_CONDITION && t->datain.data && t->datain.size > 2) {
		int n = (t->datain.data[0] << 8) | t->datain.data[1];
		if (n > t->datain.size - 2)
			n = t->datain.size - 2;
		if (n > sense_cap)
			n = sense_cap;
		memcpy(sense, t->datain.data + 2, n);
		*sense_len = n;
	}
	scsi_free_scsi_task(t);
	return status;
}

/* libiscsi's last error message for this context. */
const char *shim_error(struct iscsi_context *c)
{
	return iscsi_get_error(c);
}
