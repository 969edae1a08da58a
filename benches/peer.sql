-- The benchmark's peer: convbill's session rules (rule set `quota`) as a data engineer would
-- write them in DuckDB SQL. benches/peer.py runs it with `input` and `out` set; it writes
-- sessions, violations and invoice lines (UTC periods, quota only) as Parquet.
--
-- Same rules as convbill: duplicates of (account_id, message_id) count once (earliest time);
-- failed outbound messages are ignored; events of a key are ordered by time, inbound first,
-- then message id; windows and sessions are half-open [t, t + 24h).

SET VARIABLE day_us = 86400000000;

-- One row per event, deduplicated; `k` is a hash of the conversation key.
CREATE TEMP TABLE ev AS
SELECT
    hash(account_id, channel, business_id, user_id) AS k,
    account_id, channel, business_id, user_id, message_id,
    direction = 'inbound' AS inbound,
    coalesce(kind, 'message') AS kind,
    coalesce(status, 'delivered') = 'failed' AS failed,
    epoch_us(timestamp) AS ts
FROM read_parquet(getvariable('input'))
QUALIFY row_number() OVER (PARTITION BY account_id, message_id ORDER BY timestamp) = 1;

-- ---------------------------------------------------------------- WhatsApp
CREATE TEMP TABLE wa_in AS
SELECT k, ts FROM ev WHERE channel = 'whatsapp' AND inbound;

-- Delivered outbound messages with the customer's last message at or before them (W1, W3).
CREATE TEMP TABLE wa_out AS
SELECT o.*, (i.ts IS NOT NULL AND o.ts < i.ts + getvariable('day_us')) AS window_open
FROM (SELECT * FROM ev WHERE channel = 'whatsapp' AND NOT inbound AND NOT failed) o
ASOF LEFT JOIN wa_in i ON o.k = i.k AND o.ts >= i.ts;

-- W4: free-form outside the service window.
CREATE TEMP TABLE wa_violations AS
SELECT * FROM wa_out WHERE kind = 'message' AND NOT window_open;

-- The messages that open or join sessions, numbered in event order.
CREATE TEMP TABLE wa_q AS
SELECT *, row_number() OVER (ORDER BY k, ts, message_id) AS id
FROM wa_out WHERE kind <> 'message' OR window_open;

-- For each, the first message of its key at or after its time + 24h (W2: the next session
-- opens there if this one opened a session).
CREATE TEMP TABLE wa_first_at AS SELECT k, ts, min(id) AS id FROM wa_q GROUP BY k, ts;
CREATE TEMP TABLE wa_next AS
SELECT a.id, b.id AS next_id
FROM wa_q a ASOF LEFT JOIN wa_first_at b ON a.k = b.k AND a.ts + getvariable('day_us') <= b.ts;

-- Session starts: the first message of each key, then the chain of next messages.
CREATE TEMP TABLE wa_starts AS
WITH RECURSIVE chain(id) AS (
    SELECT min(id) FROM wa_q GROUP BY k
    UNION ALL
    SELECT n.next_id FROM chain c JOIN wa_next n ON n.id = c.id WHERE n.next_id IS NOT NULL
)
SELECT q.k, q.account_id, q.channel, q.business_id, q.user_id, q.message_id AS opened_by,
       q.ts AS started, q.ts + getvariable('day_us') AS ends,
       CASE WHEN q.window_open THEN 'user_initiated' ELSE 'business_initiated' END AS initiation
FROM chain JOIN wa_q q USING (id);

-- W5: every qualifying outbound message joins the session started last at or before it;
-- inbound messages count when inside [start, end).
CREATE TEMP TABLE wa_out_counts AS
SELECT s.k, s.started, count(*) AS outbound_messages
FROM wa_q q ASOF JOIN wa_starts s ON q.k = s.k AND q.ts >= s.started
GROUP BY ALL;
CREATE TEMP TABLE wa_in_counts AS
SELECT s.k, s.started, count(*) AS inbound_messages
FROM wa_in i ASOF JOIN wa_starts s ON i.k = s.k AND i.ts >= s.started
WHERE i.ts < s.ends
GROUP BY ALL;

CREATE TEMP TABLE wa_sessions AS
SELECT s.account_id, s.channel, s.business_id, s.user_id, s.initiation, s.started, s.ends,
       s.opened_by, coalesce(i.inbound_messages, 0) AS inbound_messages,
       o.outbound_messages, true AS billable
FROM wa_starts s
JOIN wa_out_counts o USING (k, started)
LEFT JOIN wa_in_counts i USING (k, started);

-- ---------------------------------------------------------------- Messenger and Instagram
-- M1, M2: a session starts at an inbound event when the window of the previous one has
-- closed, and ends 24h after its last inbound event.
CREATE TEMP TABLE m_in AS
SELECT *, sum(CASE WHEN prev IS NULL OR ts >= prev + getvariable('day_us') THEN 1 ELSE 0 END)
          OVER (PARTITION BY k ORDER BY ts, message_id) AS n
FROM (
    SELECT *, lag(ts) OVER (PARTITION BY k ORDER BY ts, message_id) AS prev
    FROM ev WHERE channel <> 'whatsapp' AND inbound
);
CREATE TEMP TABLE m_starts AS
SELECT k, any_value(account_id) AS account_id, any_value(channel) AS channel,
       any_value(business_id) AS business_id, any_value(user_id) AS user_id,
       arg_min(message_id, (ts, message_id)) AS opened_by,
       min(ts) AS started, max(ts) + getvariable('day_us') AS ends, count(*) AS inbound_messages
FROM m_in GROUP BY k, n;

-- M3: each delivered outbound message belongs to the session started last at or before it,
-- if it is inside it; otherwise it is a violation.
CREATE TEMP TABLE m_out AS
SELECT o.*, s.started, (s.started IS NOT NULL AND o.ts < s.ends) AS inside
FROM (SELECT * FROM ev WHERE channel <> 'whatsapp' AND NOT inbound AND NOT failed) o
ASOF LEFT JOIN m_starts s ON o.k = s.k AND o.ts >= s.started;

CREATE TEMP TABLE m_sessions AS
SELECT s.account_id, s.channel, s.business_id, s.user_id, 'standard' AS initiation,
       s.started, s.ends, s.opened_by, s.inbound_messages,
       coalesce(o.outbound_messages, 0) AS outbound_messages,
       coalesce(o.outbound_messages, 0) > 0 AS billable
FROM m_starts s
LEFT JOIN (SELECT k, started, count(*) AS outbound_messages FROM m_out WHERE inside GROUP BY ALL) o
USING (k, started);

-- ---------------------------------------------------------------- Outputs
CREATE TEMP TABLE sessions AS
SELECT sha256(account_id || chr(31) || opened_by)[1:24] AS session_id,
       account_id, channel, business_id, user_id, initiation,
       make_timestamp(started) AS started_at, make_timestamp(ends) AS ends_at, opened_by,
       inbound_messages, outbound_messages, billable, CASE WHEN billable THEN 1 ELSE 0 END AS quota,
       strftime(make_timestamp(started), '%Y-%m') AS period
FROM (SELECT * FROM wa_sessions UNION ALL SELECT * FROM m_sessions);

COPY (SELECT * FROM sessions ORDER BY account_id, channel, business_id, user_id, started_at)
TO (getvariable('out') || '/sessions.parquet') (FORMAT PARQUET);

COPY (
    SELECT account_id, channel, business_id, user_id, message_id, kind,
           make_timestamp(ts) AS timestamp, 'outside_service_window' AS reason,
           strftime(make_timestamp(ts), '%Y-%m') AS period
    FROM wa_violations
    UNION ALL
    SELECT account_id, channel, business_id, user_id, message_id, kind,
           make_timestamp(ts), 'outside_standard_window',
           strftime(make_timestamp(ts), '%Y-%m')
    FROM m_out WHERE NOT inside
    ORDER BY account_id, channel, business_id, user_id, timestamp, message_id
) TO (getvariable('out') || '/violations.parquet') (FORMAT PARQUET);

COPY (
    SELECT account_id, period, channel, initiation, count(*) AS sessions,
           count(*) FILTER (WHERE billable) AS billable_sessions, 1 AS quota_per_session,
           sum(quota) AS quota
    FROM sessions GROUP BY ALL ORDER BY ALL
) TO (getvariable('out') || '/invoice_lines.parquet') (FORMAT PARQUET);
