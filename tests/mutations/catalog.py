"""The curated list of mutations of chatserver.py: realistic bugs where users would be hurt
most, each with the tests that must catch it. tests/mutations/run.py applies them one at a
time to a scratch copy; tests/test_mutations.py runs them all in CI.

One row per mutation:
  name         short, unique, says what broke
  anchor       text that occurs EXACTLY ONCE in chatserver.py (short: a line or a few tokens)
  replacement  what the anchor becomes
  tests        node ids, "file::test" with the file relative to tests/ (fastest first: the
               run stops at the first failure)
  bug          what a user would live through

When chatserver.py changes under an anchor, run.py names the mutation whose anchor is gone
(or ambiguous): find the same code again and copy a new anchor here. Every new capability
adds the mutations that would break it, and docs/RELIABILITY.md names them beside its tests.
"""
from typing import NamedTuple


class Mutation(NamedTuple):
    name: str
    anchor: str
    replacement: str
    tests: tuple
    bug: str


MUTATIONS = []


def mutation(name, anchor, replacement, tests, bug):
    """Add a row; `tests` is a whitespace-separated string of "file::test" (under tests/)."""
    MUTATIONS.append(Mutation(name, anchor, replacement,
                              tuple("tests/" + t.replace("::", ".py::", 1)
                                    for t in tests.split()), bug))


# -- pairing token, sessions, the pairing page ----------------------------------------

mutation("token_prefix_match",
         "def _token_matches(given, expected):\n",
         "def _token_matches(given, expected):\n"
         "    return isinstance(given, str) and expected.startswith(given)\n",
         "test_promises::test_every_wrong_token_is_refused_over_the_framed_protocol "
         "test_promises::test_every_wrong_token_is_refused_over_websocket",
         "an empty, one-character or truncated token joins a protected server")

mutation("token_case_insensitive",
         "def _token_matches(given, expected):\n",
         "def _token_matches(given, expected):\n"
         "    return isinstance(given, str) and given.lower() == expected.lower()\n",
         "test_promises::test_every_wrong_token_is_refused_over_the_framed_protocol",
         "a token with its letters' case flipped joins (a 22-character token loses most of "
         "its strength)")

mutation("token_optional",
         'if self.token is not None and not _token_matches(h.get("token"), self.token):',
         'if self.token is not None and h.get("token") is not None and '
         'not _token_matches(h.get("token"), self.token):',
         "test_promises::test_every_wrong_token_is_refused_over_the_framed_protocol "
         "test_core::test_token_required_unless_open",
         "a hello without any token joins a protected server")

mutation("open_by_default",
         "self.chat.token = None if config.open else self._pairing_token()",
         "self.chat.token = None",
         "test_core::test_token_required_unless_open",
         "every server is open: anyone on the WiFi joins without scanning the QR code")

mutation("session_prefix_lookup",
         'conn = self.chat.sessions.get(session) if session else None',
         'conn = next((c for k, c in self.chat.sessions.items() if k.startswith(session)), None)',
         "test_promises::test_every_wrong_session_is_refused_by_the_http_file_routes "
         "test_http::test_upload_without_a_valid_session_is_401",
         "an empty or truncated session downloads private files and uploads as someone else")

mutation("takeover_with_any_session",
         'elif not secrets.compare_digest(claim["key_hash"], key_hash):',
         'elif False:',
         "test_promises::test_a_wrong_device_key_cannot_take_a_nick_over "
         "test_identity::test_neither_the_session_nor_the_token_takes_a_nick_over",
         "any device takes a claimed nick (and its direct messages) over")

mutation("pair_host_prefix",
         'return host == "localhost"',
         'return host.startswith("localhost")',
         "test_promises::test_the_pairing_page_refuses_look_alike_host_names",
         "a site rebound by DNS to 127.0.0.1 under localhost.evil.example reads the token")

mutation("pair_page_to_lan",
         "if not is_loopback_peer(self.conn.peer):",
         "if False:",
         "test_http::test_pairing_routes_refused_to_lan_peers",
         "anyone on the LAN opens /pair and reads the token")

mutation("auth_never_slowed",
         '    if count <= AUTH_FREE_FAILURES:\n        return 0.0\n',
         '    if True:\n        return 0.0\n',
         "test_pairing::test_repeated_failures_from_one_address_are_slowed_down",
         "wrong tokens are answered at full speed: a brute force runs unhindered")

# -- durability: acknowledged means on disk --------------------------------------------

mutation("ack_before_commit",
         '        for step in (self._commit, self._deliver, self._close_aborted,\n'
         '                     self._resume_after_disk, self._flush_dirty, self._resume_after_room):',
         '        for step in (self._deliver, self._flush_dirty, self._commit, self._close_aborted,\n'
         '                     self._resume_after_disk, self._flush_dirty, self._resume_after_room):',
         "test_promises::test_no_client_receives_a_message_before_its_commit",
         "messages are delivered and acknowledged before their commit: a crash loses "
         "acknowledged messages")

mutation("synchronous_off",
         '% ("FULL" if synchronous == "FULL" else "NORMAL"))',
         '% ("OFF" if synchronous == "FULL" else "NORMAL"))',
         "test_promises::test_sqlite_pragmas_in_force_as_shipped",
         "PRAGMA synchronous=OFF: a power cut loses acknowledged messages")

mutation("sync_default_normal",
         'Setting("sync", "--sync", ("full", "normal"), "full",',
         'Setting("sync", "--sync", ("full", "normal"), "normal",',
         "test_promises::test_sqlite_pragmas_in_force_as_shipped",
         "the shipped default survives a process crash but not a power cut")

mutation("journal_not_wal",
         'self.db.execute("PRAGMA journal_mode=WAL")',
         'self.db.execute("PRAGMA journal_mode=DELETE")',
         "test_promises::test_sqlite_pragmas_in_force_as_shipped",
         "rollback journal instead of WAL: every commit rewrites pages twice")

mutation("no_exclusive_lock",
         'self.db.execute("PRAGMA locking_mode=EXCLUSIVE")',
         'self.db.execute("PRAGMA locking_mode=NORMAL")',
         "test_promises::test_sqlite_pragmas_in_force_as_shipped "
         "test_core::test_a_second_server_on_the_same_data_folder_refuses_to_start",
         "a second server on the same folder starts: duplicate ids, deleted partial uploads")

mutation("ids_restart_from_zero",
         '        self.last_id = row[0] or 0\n        self.in_transaction = False',
         '        self.last_id = 0\n        self.in_transaction = False',
         "test_core::test_kill_9_keeps_every_acknowledged_message_and_ids_keep_increasing",
         "after a restart ids start again at 1: clients' cursors and resume break")

mutation("resend_stored_twice",
         'CREATE UNIQUE INDEX IF NOT EXISTS messages_sender_id_cid',
         'CREATE INDEX IF NOT EXISTS messages_sender_id_cid',
         "test_core::test_resend_with_same_cid_is_stored_once_and_reacknowledged",
         "a message resent after a reconnect is stored and shown twice")

mutation("no_bye_on_shutdown",
         '                conn.send_json(bye)\n',
         '                pass\n',
         "test_core::test_sigterm_sends_bye_and_exits_zero_quickly",
         "a stopping server says nothing: clients think the network failed")

# -- resume and delivery order -----------------------------------------------------------

mutation("resume_skips_one",
         'self.store.history(conn.uid, after=since,',
         'self.store.history(conn.uid, after=since + 1,',
         "test_promises::test_resume_after_a_small_gap_has_no_gap_and_no_duplicate "
         "test_promises::test_resume_after_a_small_gap_over_websocket",
         "a reconnecting client never sees the first message it missed")

mutation("resume_repeats_one",
         'self.store.history(conn.uid, after=since,',
         'self.store.history(conn.uid, after=max(0, since - 1),',
         "test_promises::test_resume_after_a_small_gap_has_no_gap_and_no_duplicate",
         "a reconnecting client gets its last seen message again (a duplicate)")

mutation("targeted_before_broadcasts",
         '                if run:\n                    self._broadcast(run)\n                    run = []\n',
         '                if False:\n                    pass\n',
         "test_promises::test_delivery_order_is_id_order_with_dms_and_broadcasts_in_one_turn",
         "a turn's DMs overtake its broadcasts: clients see ids out of order")

# -- privacy ------------------------------------------------------------------------------

mutation("dm_to_everyone",
         "            self.outbox.send(tuple(targets), raw)",
         "            self.outbox.broadcast(raw)",
         "test_core::test_direct_message_reaches_only_the_two_parties",
         "a direct message reaches everyone online")

mutation("dm_in_everyones_history",
         '"(recipient_id IS NULL OR recipient_id = ? OR sender_id = ?) %s"',
         '"(recipient_id IS NULL OR recipient_id = ? OR sender_id = ? OR 1) %s"',
         "test_core::test_direct_message_reaches_only_the_two_parties",
         "direct messages appear in everyone's history")

mutation("typing_dm_to_everyone",
         'self.outbox.send((target,), dump_json({"type": "typing"',
         'self.outbox.broadcast(dump_json({"type": "typing"',
         "test_promises::test_directed_typing_reaches_only_its_target",
         "everyone sees who is typing to whom")

mutation("private_file_readable",
         'if meta["recipient_key"] is not None and uid not in',
         'if False and uid not in',
         "test_files::test_direct_share_only_for_sender_and_recipient "
         "test_http::test_direct_share_is_forbidden_to_a_third_user",
         "a file shared privately is downloadable by anyone")

mutation("history_before_hello",
         '    "history": Handler("on_history"),',
         '    "history": Handler("on_history", needs_join=False),',
         "test_promises::test_every_request_but_hello_and_ping_is_not_joined_before_hello",
         "the history is readable without joining (and without the token)")

# -- limits and defaults as shipped ------------------------------------------------------

DEFAULTS_TEST = "test_promises::test_defaults_as_shipped_are_the_limits_reliability_md_lists"

for _name, _anchor, _replacement, _bug in [
        ("lax_out_hard_limit", "OUT_HARD_LIMIT = 16 * 1024 * 1024", "OUT_HARD_LIMIT = 1024 ** 4",
         "a client that never reads may hold 1 TiB of the server's memory"),
        ("lax_out_soft_limit", "OUT_SOFT_LIMIT = 4 * 1024 * 1024",
         "OUT_SOFT_LIMIT = 64 * 1024 * 1024", "slow clients may hold 64 MiB each"),
        ("lax_soft_grace", "OUT_SOFT_SECONDS = 30.0", "OUT_SOFT_SECONDS = 3600.0",
         "a stalled client keeps its queue for an hour"),
        ("lax_ping_after", "PING_AFTER = 30.0", "PING_AFTER = 300.0",
         "dead phones are noticed after minutes"),
        ("lax_idle_timeout", "IDLE_TIMEOUT = 90.0", "IDLE_TIMEOUT = 9000.0",
         "dead connections hold their nick and slot for 2.5 hours"),
        ("lax_http_timeout", "HTTP_TIMEOUT = 20.0", "HTTP_TIMEOUT = 600.0",
         "slowloris connections are kept for 10 minutes"),
        ("lax_max_clients", "DEFAULT_MAX_CLIENTS = 1000", "DEFAULT_MAX_CLIENTS = 100000",
         "no practical client cap: file descriptors run out first"),
        ("lax_max_file_size", "DEFAULT_MAX_FILE_SIZE = 4 * 1024 ** 3",
         "DEFAULT_MAX_FILE_SIZE = 1024 ** 4", "one upload may fill the disk"),
        ("no_free_disk_kept", "DEFAULT_MIN_FREE_DISK = 256 * 1024 ** 2",
         "DEFAULT_MIN_FREE_DISK = 0", "uploads may fill the disk to the last byte"),
        ("lax_max_uploads", "DEFAULT_MAX_UPLOADS = 4 ", "DEFAULT_MAX_UPLOADS = 400 ",
         "one user may hold 400 partial uploads open"),
        ("lax_upload_grace", "UPLOAD_GRACE = 3600.0", "UPLOAD_GRACE = 36000.0",
         "abandoned partial uploads keep their disk space for 10 hours"),
        ("lax_text_limit", "MAX_TEXT_BYTES = 16 * 1024", "MAX_TEXT_BYTES = 1024 * 1024",
         "1 MiB messages flood every client's screen and memory"),
        ("lax_nick_limit", "MAX_NICK_CHARS = 32", "MAX_NICK_CHARS = 320",
         "nicks of 320 characters break every client's layout"),
        ("lax_http_headers", "HTTP_MAX_HEADERS = 100 ", "HTTP_MAX_HEADERS = 10000 ",
         "requests with 10,000 header fields are parsed"),
        ("lax_ws_message", "WS_MAX_MESSAGE = 1 * 1024 * 1024 + 64 * 1024",
         "WS_MAX_MESSAGE = 64 * 1024 * 1024", "a browser tab may send 64 MiB messages"),
        ("lax_frame_header", "MAX_HEADER_BYTES = 64 * 1024 ",
         "MAX_HEADER_BYTES = 16 * 1024 * 1024 ", "frame headers of 16 MiB are buffered"),
        ("no_default_rate_limit", "DEFAULT_RATE_LIMIT = 20.0", "DEFAULT_RATE_LIMIT = 0.0",
         "no flood control unless the operator asks for it"),
]:
    mutation(_name, _anchor, _replacement, DEFAULTS_TEST, _bug + " (the shipped default)")

mutation("no_default_rate_limit_behaviour",
         "DEFAULT_RATE_LIMIT = 20.0",
         "DEFAULT_RATE_LIMIT = 0.0",
         "test_promises::test_a_default_server_rate_limits_a_flood",
         "a default server lets one client flood everyone")

mutation("bucket_never_empties",
         "if self.tokens >= 1.0:",
         "if True:",
         "test_core::test_flood_is_rate_limited_and_connection_stays",
         "the rate limit never refuses: one client floods everyone")

mutation("rate_limit_counts_chunks",
         '"chunk": Handler("on_chunk", rate_limited=False, payload=True, framed_only=True),',
         '"chunk": Handler("on_chunk", rate_limited=True, payload=True, framed_only=True),',
         "test_promises::test_a_real_size_upload_passes_the_default_rate_limit",
         "a default server refuses every upload longer than 50 chunks")

mutation("text_counted_in_characters",
         'if len(text) * 4 > MAX_TEXT_BYTES and len(text.encode("utf-8")) > MAX_TEXT_BYTES:',
         "if len(text) > MAX_TEXT_BYTES:",
         "test_core::test_text_too_long",
         "messages of 16K non-ASCII characters (up to 64 KiB) pass the 16 KiB limit")

mutation("max_clients_off_by_one",
         "if len(self.conns) >= self.max_clients:",
         "if len(self.conns) > self.max_clients:",
         "test_core::test_server_full",
         "one client more than --max-clients is served (on Windows: past select()'s limit)")

mutation("out_hard_limit_ignored",
         '        if self.out_bytes > cfg.out_hard:\n            self.abort("slow")',
         '        if False:\n            self.abort("slow")',
         "test_core::test_client_that_never_reads_is_closed_others_keep_receiving",
         "a client that never reads grows the server's memory without bound")

mutation("soft_grace_ignored",
         'now - self.soft_since >= self.loop.config.out_soft_seconds - 0.01:',
         'False:',
         "test_core::test_soft_output_limit_grace_period",
         "a client stalled over the soft limit is never closed")

mutation("idle_never_closed",
         "if silent >= cfg.idle_timeout:",
         "if False:",
         "test_core::test_ping_pong_and_idle_timeout",
         "dead connections are never closed: their nicks stay taken forever")

# -- bad input ----------------------------------------------------------------------------

mutation("sniff_any_byte_is_framed",
         'if first == b"\\0":',
         "if not first.isalpha():",
         "test_core::test_garbage_first_byte_is_bad_frame",
         "a TLS hello or garbage is read as a frame: no bad_frame answer")

mutation("zero_header_allowed",
         "if hlen == 0:",
         "if False:",
         "test_framing::test_handwritten_invalid_vector_raises_its_code "
         "test_core::test_zero_header_length_is_bad_frame",
         "a frame with an empty header is not refused as bad_frame")

mutation("header_limit_unchecked",
         "if hlen > self.max_header:",
         "if False:",
         "test_framing::test_oversized_length_refused_before_body_arrives "
         "test_core::test_length_over_limit_closes_before_reading",
         "a declared 4 GiB header is awaited (and buffered) instead of refused")

mutation("payload_limit_exclusive",
         "if plen > self.max_payload:",
         "if plen >= self.max_payload:",
         "test_framing::test_limits_are_inclusive_and_configurable",
         "a chunk of exactly 1 MiB (what upload_ready announces) is refused")

mutation("bad_json_fatal",
         '"bad_json": ErrorKind(False,',
         '"bad_json": ErrorKind(True,',
         "test_core::test_bad_headers_get_error_and_connection_stays",
         "one malformed frame disconnects the client")

mutation("decode_header_leaks_json_error",
         "except (UnicodeDecodeError, ValueError):",
         "except UnicodeDecodeError:",
         "test_framing::test_fuzz_mutated_frames_reach_the_decoder",
         "invalid JSON raises an internal error instead of bad_json")

mutation("payload_on_msg_allowed",
         '    "msg": Handler("on_msg"),',
         '    "msg": Handler("on_msg", payload=True),',
         "test_core::test_payload_on_a_chat_message_is_refused",
         "chat messages may carry 1 MiB payloads that are silently dropped")

mutation("proto_unchecked",
         'if h.get("proto", PROTOCOL_VERSION) != PROTOCOL_VERSION:',
         "if False:",
         "test_core::test_second_hello_and_bad_proto",
         "a client of a future protocol version joins and misunderstands everything")

mutation("eof_not_noticed",
         '        if not got:\n            raise PeerGone("quit")',
         '        if got is None:\n            raise PeerGone("quit")',
         "test_core::test_truncated_frame_then_eof_is_ignored",
         "a client that hangs up is never removed (its nick stays online, the loop spins)")

# -- files --------------------------------------------------------------------------------

mutation("download_cancel_noop",
         '        self.outbox.call(lambda: conn.cancel_download(file_id))\n',
         '        pass\n',
         "test_promises::test_download_cancel_stops_the_stream",
         "a cancelled download goes on to the end, over a phone's data plan")

mutation("no_sendfile_seek_lost",
         '            dl.fh.seek(seg.offset)\n',
         '            pass\n',
         "test_promises::test_downloads_without_sendfile_honour_offsets_and_ranges",
         "on Windows (no sendfile), resumed downloads and ranges get the wrong bytes")

mutation("sha_mismatch_accepted",
         "if up.sha256_expected and up.sha256_expected != digest:",
         "if False:",
         "test_files::test_sha256_mismatch_discards_the_upload",
         "a corrupted upload is published as if whole")

mutation("size_overrun_accepted",
         "        if up.received + len(data) > up.size:",
         "        if False:",
         "test_files::test_more_bytes_than_announced",
         "more bytes than announced are written (past the disk reservation)")

mutation("short_upload_accepted",
         "        if up.received != up.size:",
         "        if False:",
         "test_files::test_fewer_bytes_than_announced",
         "a file marked complete with bytes missing is published")

mutation("foreign_upload_writable",
         'if up is None or up.owner_id != conn.uid:',
         'if up is None:',
         "test_files::test_chunk_for_unknown_or_foreign_upload",
         "anyone may append to someone else's upload")

mutation("wrong_offset_accepted",
         "if offset != up.received or isinstance(offset, bool):",
         "if isinstance(offset, bool):",
         "test_files::test_chunk_at_wrong_offset",
         "a chunk sent twice after a reconnect is appended twice: a corrupted file")

mutation("disk_write_error_swallowed",
         "up.error = exc",
         "up.error = None",
         "test_files::test_a_failing_disk_write_is_reported_and_others_are_unaffected",
         "a full disk publishes a truncated file instead of answering disk_full")

mutation("disk_queue_unbounded",
         "if self.files.disk.submitted != submitted_before and self.files.disk.congested \\",
         "if False and self.files.disk.congested \\",
         "test_files::test_a_slow_disk_pauses_the_uploader_not_the_chat",
         "a slow disk makes the server buffer every upload in memory")

mutation("free_disk_not_kept",
         "needed = size + self.files.reserved_bytes() + self.config.min_free_disk",
         "needed = size + self.files.reserved_bytes()",
         "test_files::test_disk_full_is_refused_before_starting",
         "uploads fill the disk the history database needs")

mutation("upload_slots_off_by_one",
         'if sum(1 for u in uploads if u.owner_id == conn.uid) >= self.config.max_uploads:',
         'if sum(1 for u in uploads if u.owner_id == conn.uid) > self.config.max_uploads:',
         "test_files::test_too_many_uploads",
         "one upload more than --max-uploads per user")

mutation("recover_ignores_grace",
         'if self.expired(up, now) or not os.path.exists(up.path):',
         'if not os.path.exists(up.path):',
         "test_promises::test_partial_uploads_older_than_an_hour_are_deleted_at_start_up",
         "abandoned partial uploads survive every restart, with their disk reservation")

mutation("orphan_files_kept",
         "if name not in listed:",
         "if False:",
         "test_files::test_kill_9_mid_upload_never_serves_a_partial_file",
         "files whose commit a crash lost stay on disk forever")

mutation("orphan_parts_kept",
         "if path not in known_parts:",
         "if False:",
         "test_files::test_kill_9_mid_upload_never_serves_a_partial_file",
         "partial files without an upload row stay on disk forever")

mutation("file_csp_without_sandbox",
         "FILE_CSP = \"sandbox; default-src 'none'",
         "FILE_CSP = \"default-src 'none'",
         "test_http::test_download_matches_sha256_and_has_file_headers",
         "a shared HTML file runs its script in the chat's origin")

mutation("svg_inline",
         'mime.lower() in INLINE_IMAGE_TYPES',
         'mime.startswith("image/")',
         "test_http::test_inline_only_for_raster_images "
         "test_hostile::test_only_raster_images_are_served_inline",
         "a shared SVG is shown inline: its script may run")

mutation("names_keep_separators",
         "_UNSAFE_NAME_CHARS = re.compile(r'[\\x00-\\x1f\\x7f<>:\"/\\\\|?*]')",
         "_UNSAFE_NAME_CHARS = re.compile(r'[\\x00-\\x1f\\x7f<>:\"|?*]')",
         "test_files::test_hostile_names_are_sanitised_metadata",
         "file names keep path separators: a client saving by name writes outside its folder")

mutation("http_413_as_400",
         '"file_too_large": ErrorKind(False, 413,',
         '"file_too_large": ErrorKind(False, 400,',
         "test_http::test_upload_over_the_size_limit_is_413_and_leaves_nothing",
         "a browser cannot tell 'file too large' from a bad request")

# -- presence -------------------------------------------------------------------------------

PRESENCE_TEST = "test_promises::test_presence_stops_above_500_users_and_welcome_lists_500"

mutation("presence_limit_raised",
         "PRESENCE_LIMIT = 500 ",
         "PRESENCE_LIMIT = 5000 ",
         PRESENCE_TEST,
         "in a room of thousands every join and leave is sent to everyone")

mutation("welcome_users_uncapped",
         "itertools.islice(self.joined.values(), WELCOME_USERS_MAX)",
         "itertools.islice(self.joined.values(), None)",
         PRESENCE_TEST,
         "welcome lists every nick online, however many")

mutation("leave_above_limit",
         "if len(self.joined) < PRESENCE_LIMIT:",
         "if True:",
         PRESENCE_TEST,
         "leave events are sent while more than 500 are online")

# -- WebSocket and HTTP answers, connections ---------------------------------------------

mutation("server_full_http_as_frame",
         "if first[:1].isalpha():",
         "if False:",
         "test_promises::test_server_full_is_http_503_and_refuses_a_websocket",
         "a full server answers browsers with a binary frame instead of 503")

mutation("ws_shutdown_close_1008",
         '"The server is stopping.", ws_close=1001)',
         '"The server is stopping.", ws_close=1008)',
         "test_promises::test_ws_shutdown_is_bye_then_close_1001",
         "browsers are told 'policy violation' when the server stops")

mutation("ws_timeout_close_1008",
         '"Nothing arrived in time.", ws_close=1001)',
         '"Nothing arrived in time.", ws_close=1008)',
         "test_promises::test_ws_idle_timeout_is_error_then_close_1001",
         "idle browsers are told 'policy violation'")

mutation("ws_unmasked_accepted",
         "if not second & 0x80:",
         "if False:",
         "test_http::test_ws_unmasked_client_frame_is_closed_with_1002",
         "unmasked client frames are accepted (RFC 6455 5.1), misparsed")

mutation("ws_utf8_unchecked",
         'return WsText(payload.decode("utf-8"))',
         'return WsText(payload.decode("utf-8", "replace"))',
         "test_http::test_ws_invalid_utf8_text_is_closed_with_1007",
         "invalid UTF-8 from a browser is silently changed instead of refused with 1007")

mutation("ws_message_size_unchecked",
         "if opcode < WS_OP_CLOSE and length > self.max_message:",
         "if False:",
         "test_http_ws_codec::test_message_too_big_across_fragments_is_1009",
         "a message in many fragments grows without limit (no 1009)")

mutation("range_at_size_satisfiable",
         "    if start >= size:\n",
         "    if start > size:\n",
         "test_http_ws_codec::test_unsatisfiable_range_is_416_with_content_range",
         "a Range starting at the file's end is answered 206 with a negative length, not 416")

mutation("ws_unmask_short_key",
         "key = (mask * (length // 4 + 1))[:length]",
         "key = (mask * (length // 4))[:length]",
         "test_http_ws_codec::test_fuzz_ws_mutated_frames_reach_the_codec "
         "test_http_ws_codec::test_differential_against_websockets_server_protocol",
         "the last bytes of most WebSocket messages are garbled")

mutation("http_chunk_line_unchecked",
         "if size is None or not _HTTP_CHUNK_EXT_RE.fullmatch(line, size.end()):",
         "if False:",
         "test_http_ws_codec::test_bad_requests_raise_exact_status "
         "test_http_ws_codec::test_fuzz_http_mutated_requests_reach_the_parser",
         "a malformed chunk-size line raises an internal error instead of 400")

mutation("no_408",
         'self.fail(HttpError(408, "The request took too long to arrive."))',
         'self.server._drop(self.conn, "timeout")',
         "test_promises::test_a_slow_request_head_is_answered_408",
         "a slow request head is cut without its 408")

mutation("no_lingering_close",
         '        if self.state == CLOSING and not self.out and not self.bulk:\n'
         '            self.linger()',
         '        if self.state == CLOSING and not self.out and not self.bulk:\n'
         '            self.loop.drop(self, self.close_reason)',
         "test_promises::test_a_fatal_error_reaches_a_client_whose_input_is_still_arriving",
         "the final error frame is destroyed by a TCP reset when the client was still sending")

# -- platform paths -------------------------------------------------------------------------

mutation("ctrl_break_ignored",
         "signal.signal(signal.SIGBREAK, on_signal)",
         "pass",
         "test_promises::test_ctrl_break_stops_the_server_cleanly",
         "Ctrl+Break in the Windows console kills the server without bye or commit")

mutation("memory_db_in_default_folder",
         'root, db_path = self._tmpdir.name, ":memory:"',
         "root, db_path = self._tmpdir.name, (os.makedirs(default_data_dir(), exist_ok=True), "
         'os.path.join(default_data_dir(), "chat.sqlite3"))[1]',
         "test_core::test_memory_mode_keeps_nothing_on_disk",
         "--memory writes the history into the default data folder")

mutation("memory_files_in_data_dir",
         'root, db_path = self._tmpdir.name, ":memory:"',
         'root, db_path = cfg.data_dir or default_data_dir(), ":memory:"',
         "test_core::test_memory_mode_keeps_nothing_on_disk",
         "--memory stores shared files in the data folder, and never deletes them")

# -- a hostile LAN: budgets of strangers and of clients (tests/test_hostile.py) -------------

H = "test_hostile::"

mutation("hello_deadline_never_fires",
         "if conn.state == OPEN and conn.nick is None and conn.hello_due == due:",
         "if False:",
         H + "test_the_hello_deadline_cannot_be_extended",
         "sockets that never say hello hold their slots forever")

mutation("prejoin_payload_allowed",
         "self.decoder = FrameDecoder(max_header=PREJOIN_MAX_HEADER, max_payload=0)",
         "self.decoder = FrameDecoder(max_header=PREJOIN_MAX_HEADER)",
         "test_files::test_chunk_before_hello " +
         H + "test_strangers_declaring_large_payloads_allocate_nothing",
         "a stranger makes the server allocate a 1 MiB payload with 18 bytes")

mutation("auth_delay_exponent_uncapped",
         "0.5 * 2.0 ** min(count - AUTH_FREE_FAILURES - 1, 32)",
         "0.5 * 2.0 ** (count - AUTH_FREE_FAILURES - 1)",
         H + "test_the_slow_down_is_capped_for_any_count",
         "about 1,028 wrong tokens overflow the delay and stop the server")

mutation("closing_connection_keeps_dispatching",
         "return self.state == OPEN and self.frames_left > 0 and \\\n"
         "            self.out_bytes + self.out_pending <= self.out_budget",
         "return self.frames_left > 0 and \\\n"
         "            self.out_bytes + self.out_pending <= self.out_budget",
         H + "test_a_thousand_wrong_tokens_in_one_write_get_one_answer",
         "every hello of one write is tried before the fatal close: a brute force at read speed")

mutation("no_output_pacing",
         "return self.state == OPEN and self.frames_left > 0 and \\\n"
         "            self.out_bytes + self.out_pending <= self.out_budget",
         "return self.state == OPEN and self.frames_left > 0",
         H + "test_history_requests_that_are_never_read_cost_one_output_budget",
         "three clients asking for history they never read take 630 MB")

mutation("per_address_cap_ignored",
         "if cap and self.addresses.count(conn.address) >= cap:",
         "if False:",
         H + "test_one_address_cannot_open_more_than_its_share",
         "one machine opens every slot of the server")

mutation("no_eviction_when_full",
         "victim = self._evictable(time.monotonic())",
         "victim = None",
         H + "test_sockets_that_never_say_hello_cannot_lock_users_out",
         "a dozen silent sockets lock every real user out of a small server")

mutation("failed_commit_still_delivers",
         "            self.chat.storage_failed(exc)\n        else:\n            self.files.turn_committed()",
         "            self.store.rollback()\n        else:\n            self.files.turn_committed()",
         H + "test_a_failed_write_refuses_the_turn_and_the_loop_goes_on",
         "a full disk acknowledges messages it never stored")

mutation("listener_spins_at_fd_limit",
         "            for sock in self.listeners:\n                self.selector.unregister(sock)\n"
         "        LOOP_LOG",
         "            pass\n        LOOP_LOG",
         H + "test_at_the_descriptor_limit_the_server_stops_accepting_without_spinning",
         "at the open-file limit the loop spins a core and floods the log")

mutation("no_fd_clamp",
         "            if clients > fits:",
         "            if False:",
         H + "test_max_clients_is_lowered_to_fit_the_open_file_limit",
         "max-clients beyond the open-file limit: accept fails and the loop spins")

mutation("parts_stay_open_after_leaving",
         "                up.uploader = None\n                self._close(up)",
         "                up.uploader = None",
         H + "test_partial_uploads_hold_no_descriptor_once_their_uploader_left",
         "partial uploads hold a descriptor for an hour after their uploader left")

mutation("reservation_without_uploader",
         "return self.uploader is not None and not self.uploader.closed and \\",
         "return True or \\",
         H + "test_announced_uploads_reserve_disk_only_while_they_are_being_sent",
         "abandoned announcements make everyone else's upload fail with disk_full")

mutation("lone_surrogates_pass",
         'if b"\\\\u" in raw and _has_lone_surrogate(obj):',
         "if False:",
         H + "test_lone_surrogates_are_bad_json",
         "a lone surrogate in a message breaks SQLite and the encoder")

mutation("deep_json_crashes",
         "    except RecursionError:\n        raise ChatError(\"bad_json\"",
         "    except MemoryError:\n        raise ChatError(\"bad_json\"",
         H + "test_deeply_nested_json_is_bad_json",
         "deeply nested JSON raises RecursionError in the loop")

mutation("unicode_mime_passes",
         '_MIME_RE = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")',
         '_MIME_RE = re.compile(r"[\\w.+-]+/[\\w.+-]+")',
         H + "test_announced_mime_types_are_ascii_or_the_default",
         "a non-ASCII mime type breaks the latin-1 header of every download of the file")

mutation("client_string_logged_raw",
         'printable(client or "unknown client")',
         '(client or "unknown client")',
         H + "test_client_strings_cannot_forge_log_lines_or_drive_the_console",
         "a client forges log lines and clears the operator's console")

mutation("data_folder_world_readable",
         "        os.chmod(path, 0o700)",
         "        os.chmod(path, 0o755)",
         H + "test_the_data_folder_is_private_to_the_user",
         "other users of the PC read the pairing token and private messages")

mutation("ping_echo_unbounded",
         "if len(echo) > PING_ECHO_MAX:",
         "if False:",
         H + "test_pings_that_are_never_read_are_bounded",
         "pings echo any amount of JSON back")

mutation("ping_not_rate_limited",
         '"ping": Handler("on_ping", needs_join=False),',
         '"ping": Handler("on_ping", needs_join=False, rate_limited=False),',
         H + "test_pings_count_in_the_flood_control",
         "a ping flood is answered at read speed")

mutation("health_counts_for_everyone",
         "        if is_loopback_peer(self.conn.peer):\n            self.respond_json(200, self.site.health())",
         "        if True:\n            self.respond_json(200, self.site.health())",
         H + "test_health_shows_counts_to_the_pc_only",
         "/healthz tells anyone on the LAN how a brute-force run is doing")

mutation("cancel_overtakes_download",
         "        self.outbox.call(lambda: conn.cancel_download(file_id))\n",
         "        conn.cancel_download(file_id)\n",
         H + "test_download_and_cancel_in_one_write_send_no_chunk "
         "test_chat::test_download_and_cancel_happen_in_the_order_they_were_sent",
         "a cancel sent right after its download is ignored and the whole file arrives")

mutation("ws_fragments_unbounded",
         "            if self._fragments >= WS_MAX_FRAGMENTS:",
         "            if False:",
         H + "test_empty_websocket_fragments_are_bounded_before_and_after_hello",
         "empty WebSocket fragments are parsed forever")

mutation("upload_registered_before_its_row",
         "        self.store.save_upload(up)\n        make_private_file(up.path)\n"
         "        self.uploads[upload_id] = up\n",
         "        self.uploads[upload_id] = up\n        self.store.save_upload(up)\n"
         "        make_private_file(up.path)\n",
         H + "test_an_upload_whose_row_cannot_be_written_leaks_nothing",
         "a failed insert leaks an upload slot: later uploads get too_many_uploads")

mutation("missing_nick_is_nick_invalid",
         "raise bad_request(\"'nick' is required and must be a string.\")",
         'raise ChatError("nick_invalid", "The nick must be a string.")',
         H + "test_hello_without_a_string_nick_is_bad_request",
         "a client written from PROTOCOL.md gets another code than the contract says")

mutation("ws_internal_error_no_1011",
         "conn.sock.send(conn.handler.ws.close(WS_CLOSE_INTERNAL_ERROR,",
         "conn.sock.send(conn.handler.ws.close(WS_CLOSE_POLICY,",
         "test_promises::test_ws_internal_error_is_close_1011",
         "a server error looks like a policy refusal to the browser")

# -- identities: a nick belongs to the device that claimed it (tests/test_identity.py) ------

I = "test_identity::"

mutation("lookalikes_allowed",
         "        for other in store.lookalikes(nick_skeleton(nick), key):",
         "        for other in []:",
         I + "test_a_nick_that_looks_like_a_claimed_one_is_refused",
         "a classmate joins as Cyrillic 'аlice' beside the real alice")

mutation("nick_key_without_nfkc",
         '    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", nick).casefold())',
         "    return nick.casefold()",
         I + "test_the_same_nick_in_another_form_is_the_same_claim " +
         I + "test_skeletons_fold_look_alikes_and_keep_distinct_names_apart",
         "fullwidth 'ａｌｉｃｅ' is another nick than 'alice'")

mutation("claims_never_lapse_wrongly",
         "        if claim is not None and self.lapsed(claim, now):",
         "        if claim is not None and claim['nick_key'] not in self.joined:",
         I + "test_the_next_holder_of_a_lapsed_nick_gets_nothing_of_the_previous_owners "
         "test_core::test_a_nick_stays_with_its_device_after_leaving",
         "anyone takes a nick the moment its owner goes offline")

mutation("lapsed_heir_inherits_history",
         "            store.lapse(claim[\"id\"])            # unused too long: the name is free again\n"
         "            claim = None",
         "            store.claim(claim[\"id\"], None, now)",
         I + "test_the_next_holder_of_a_lapsed_nick_gets_nothing_of_the_previous_owners",
         "the next holder of a lapsed nick reads the previous owner's direct messages")

mutation("space_like_nicks_allowed",
         '        if (category == "Zs" and ch != " ") or ch in _BLANK_LETTERS:',
         "        if False:",
         I + "test_invisible_and_space_like_characters_are_refused",
         "'al\u00a0ice' with a no-break space passes for 'al ice'")

mutation("session_in_links_accepted",
         '        if "session" in req.query:',
         "        if False:",
         I + "test_the_session_cookie_replaces_the_session_in_links",
         "clients keep putting the session in links that get pasted into the chat")

mutation("host_check_off",
         "        if not self.site.host_allowed(host):",
         "        if False:",
         I + "test_a_host_that_is_not_the_servers_is_refused_on_every_route",
         "a web page on a rebound DNS name talks to the chat (DNS rebinding)")

mutation("upgrade_forgets_dms",
         '            for table, key_column, id_column in (\n'
         '                    ("messages", "sender_key", "sender_id"),\n'
         '                    ("messages", "recipient_key", "recipient_id"),',
         '            for table, key_column, id_column in (\n'
         '                    ("messages", "sender_key", "sender_id"),',
         I + "test_an_old_data_folder_keeps_its_history_and_the_first_device_claims_each_nick",
         "after the upgrade, old direct messages are shown to everyone")

mutation("no_link_for_show_link",
         "            log.warning(\"%s\", notice)\n        self._write_pairing_link()\n",
         "            log.warning(\"%s\", notice)\n",
         I + "test_show_link_prints_the_link_and_qr_code_with_or_without_a_running_server",
         "--show-link cannot show the link while the server runs")

mutation("bye_replaced_missing",
         "            self.outbox.send((holder,), b'{\"type\":\"bye\",\"reason\":\"replaced\"}')\n",
         "",
         "test_core::test_reconnect_with_the_device_key_takes_over_a_dead_connection "
         "test_web_e2e::test_the_same_browser_in_two_tabs_does_not_fight_over_the_nick",
         "two tabs of one browser take the nick from each other forever")


# -- moderation and changes to the history (issue 17) ------------------------------------
M = "test_moderation::"

mutation("anyone_changes_any_message",
         '        if row["sender_id"] != conn.uid:\n            raise ChatError("forbidden"',
         '        if False:\n            raise ChatError("forbidden"',
         M + "test_a_user_cannot_delete_or_edit_someone_elses_message",
         "a classmate deletes or rewrites someone else's message")

mutation("dm_change_to_everyone",
         '        if row["recipient_id"] is None:\n            self.outbox.broadcast(raw)\n'
         '            return\n',
         '        if True:\n            self.outbox.broadcast(raw)\n            return\n',
         M + "test_a_direct_message_and_its_changes_stay_between_its_two_parties",
         "the edited text of a direct message reaches everyone")

mutation("dm_visible_to_changers",
         '                uid is not None and row["recipient_id"] is not None',
         '                False and row["recipient_id"] is not None',
         M + "test_a_direct_message_and_its_changes_stay_between_its_two_parties",
         "a third user learns that a direct message exists, and which id it has")

mutation("removed_file_stays_on_disk",
         '            self.files.remove([msg["file"]["id"]])\n',
         '            pass\n',
         M + "test_deleting_a_file_message_removes_its_bytes_and_its_links",
         "an unsent file can still be downloaded by whoever saved its link")

mutation("doomed_files_never_removed",
         '        for path in doomed:\n            _remove_quietly(path)\n',
         '        pass\n',
         M + "test_deleting_a_file_message_removes_its_bytes_and_its_links " +
         M + "test_clear_removes_everything_and_resuming_clients_learn_it",
         "removed files' bytes stay on the PC's disk forever")

mutation("resume_misses_changes",
         'limit=WELCOME_HISTORY_RESUME, changes=True)',
         'limit=WELCOME_HISTORY_RESUME, changes=False)',
         M + "test_a_resuming_client_sees_what_changed_while_it_was_away " +
         M + "test_clear_removes_everything_and_resuming_clients_learn_it",
         "a phone that was offline keeps showing a message everyone else saw removed")

mutation("no_edit_window",
         "        if window <= 0 or time.time() - parse_timestamp(row[\"msg\"][\"ts\"]) > window:",
         "        if window < 0:",
         M + "test_edits_end_with_the_edit_window",
         "a message can be rewritten days later, after everyone read and answered it")

mutation("ban_not_enforced",
         "        if ban is not None:\n            raise ChatError(\"banned\", ban_sentence(ban))",
         "        if False:\n            raise ChatError(\"banned\", ban_sentence(ban))",
         M + "test_a_banned_device_stays_out_until_unbanned_also_after_a_restart",
         "a banned student reconnects at once and gets the whole history")

mutation("ban_forgotten_at_restart",
         '        self.bans = []                  # sanction rows of bans\n        self.reload()\n',
         '        self.bans = []                  # sanction rows of bans\n',
         M + "test_a_banned_device_stays_out_until_unbanned_also_after_a_restart",
         "restarting the server lifts every ban")

mutation("mute_not_enforced",
         "        if conn.device_hash in self.mod.muted:\n            raise ChatError(\"muted\"",
         "        if False:\n            raise ChatError(\"muted\"",
         M + "test_a_muted_user_reads_but_cannot_post",
         "a muted user keeps posting")

mutation("lock_not_enforced",
         '        if self.mod.room["locked"] and not self.store.known_identity(key, key_hash):',
         '        if False:',
         M + "test_a_locked_room_keeps_new_nicks_out_and_lets_members_back",
         "a locked room still lets strangers in")

mutation("operator_page_for_the_lan",
         "        if not is_loopback_peer(self.conn.peer) or \\\n"
         "                not _is_loopback_url_host(\"//\" + (req.header(\"host\") or \"\")):\n"
         "            raise HttpError(403, \"The operator page",
         "        if not _is_loopback_url_host(\"//\" + (req.header(\"host\") or \"\")):\n"
         "            raise HttpError(403, \"The operator page",
         M + "test_the_operator_page_is_refused_to_a_peer_on_the_network",
         "anyone on the WiFi kicks, bans and clears the history")

mutation("operator_without_key",
         "        if need_key and not self.site.operator.key_matches(",
         "        if False and not self.site.operator.key_matches(",
         M + "test_operator_requests_need_the_key",
         "any program on the PC, or a page that gets past the Host check, drives the room")

mutation("operator_accepts_forms",
         '        if content_type != "application/json":',
         '        if content_type not in ("application/json", "text/plain", '
         '"application/x-www-form-urlencoded"):',
         M + "test_no_other_web_page_can_drive_the_operator",
         "a web page the organiser visits clears the history with a hidden form (CSRF)")

mutation("clear_without_confirmation",
         '        if body.get("confirm") != "clear":',
         '        if False:',
         M + "test_clear_removes_everything_and_resuming_clients_learn_it",
         "one stray click on the operator page wipes the class's history")

mutation("operator_ok_before_commit",
         "            self.chat.outbox.call(lambda: answer(result))\n",
         "            self.busy = False\n"
         "            self.respond_json(200, result, keep_alive)\n",
         M + "test_the_operators_ok_comes_after_the_commit_and_a_failed_one_is_507",
         "the organiser is told 'done' for a change that a full disk never stored")

mutation("decisions_kept_after_rollback",
         "        self.reload_decisions()\n",
         "",
         M + "test_a_token_rotation_that_could_not_be_stored_keeps_the_old_token",
         "a token rotation that failed to store works until the next start, then the old "
         "code is back")


# -- replies, mentions, reactions, search; how the pages are served (issue 20) ------------
C = "test_conversation::"
S = "test_serving::"

mutation("reply_quotes_any_dm",
         "        if row[\"recipient_id\"] is not None and \\\n"
         "                {row[\"sender_id\"], row[\"recipient_id\"]} != {conn.uid, recipient and "
         "recipient[0]}:",
         "        if False:",
         C + "test_a_direct_message_is_answered_only_in_its_own_conversation",
         "a public reply quotes a direct message to the whole class")

mutation("quote_keeps_removed_text",
         "        self.store.rewrite_message(row[\"id\"], _json_encoder.encode(tombstone), \"\")\n"
         "        self.requote(tombstone)\n",
         "        self.store.rewrite_message(row[\"id\"], _json_encoder.encode(tombstone), \"\")\n",
         C + "test_quotes_follow_an_edit_and_a_removal_of_the_original",
         "an unsent message lives on in the quotes of its replies")

mutation("search_ignores_visibility",
         "        where = [\"m.kind = 0\", \"(m.recipient_id IS NULL OR m.recipient_id = ? OR \"\n"
         "                 \"m.sender_id = ?)\"]",
         "        where = [\"m.kind = 0\", \"(1 OR ? OR ?)\"]",
         C + "test_search_shows_a_direct_message_to_its_two_parties_only",
         "anyone finds the direct messages of others by searching for a word")

mutation("search_finds_removed",
         "        self.store.rewrite_message(row[\"id\"], _json_encoder.encode(tombstone), \"\")",
         "        self.store.rewrite_message(row[\"id\"], _json_encoder.encode(tombstone))",
         C + "test_search_finds_a_file_by_its_name_and_never_a_removed_message",
         "a removed message still turns up in search results")

mutation("search_like_wildcards",
         "            args = [\"%\" + w.replace(\"\\\\\", \"\\\\\\\\\").replace(\"%\", \"\\\\%\")"
         ".replace(\"_\", \"\\\\_\")\n"
         "                    + \"%\" for w in words] + args",
         "            args = [\"%\" + w + \"%\" for w in words] + args",
         C + "test_search_without_fts5_finds_substrings",
         "on an SQLite without FTS5, % and _ in a search match anything")

mutation("reactions_not_limited",
         "    \"react\": Handler(\"on_react\"),",
         "    \"react\": Handler(\"on_react\", rate_limited=False),",
         C + "test_reactions_count_in_flood_control",
         "one script floods the room with reaction changes")

mutation("many_reactions_per_user",
         "        after = {e: [u for u in uids if u != conn.uid] for e, uids in before.items()}",
         "        after = {e: list(uids) for e, uids in before.items()}",
         C + "test_reactions_one_per_user_live_and_in_history",
         "one user stacks every emoji on a message")

mutation("mentions_leave_the_dm",
         "            if recipient is not None and claim[\"id\"] not in (sender_uid, "
         "recipient[0]):\n                continue\n",
         "",
         C + "test_a_direct_message_mentions_only_its_two_parties",
         "a direct message names a third person, who was never meant to be in it")

mutation("operator_sees_dm_quotes",
         "    return {k: v for k, v in msg.items() if k in _OPERATOR_SEES_OF_PRIVATE} | "
         "{\"private\": True}",
         "    return {k: v for k, v in msg.items() if k not in (\"text\", \"file\", \"edited\")} | "
         "{\"private\": True}",
         C + "test_the_operator_export_shows_no_quote_of_a_direct_message",
         "the export shows a direct message's text through the quote of its answer")

mutation("csp_allows_inline",
         "        csp = _page_csps[id(page)] = PAGE_CSP % (\" \".join(hashes) or \"'none'\")",
         "        csp = _page_csps[id(page)] = PAGE_CSP % \"'self' 'unsafe-inline'\"",
         S + "test_the_csp_lets_only_the_pages_own_script_run",
         "a script injected into the page (a bug in how a message is shown) runs")

mutation("gzip_despite_q0",
         "        if name.strip() in (\"gzip\", \"x-gzip\"):\n            return q > 0",
         "        if name.strip() in (\"gzip\", \"x-gzip\"):\n            return True",
         S + "test_accept_encoding_is_read_as_rfc_9110_says",
         "a client that refuses gzip gets bytes it cannot read")

# -- fairness under load (issue 19) -------------------------------------------------------

F = "test_fairness::"

mutation("broadcast_reaches_the_joining",
         "            if conn.state != OPEN or (welcoming and conn in welcoming):",
         "            if conn.state != OPEN:",
         "test_promises::test_a_resume_in_the_middle_of_a_burst_gets_welcome_first_and_nothing_"
         "twice",
         "a phone that reconnects while others chat gets a message before its welcome and "
         "again in it, then misses the gap it should have paged")

mutation("bulk_lane_unbounded",
         "            used = self._serve(conn, min(BULK_SLICE_FRAMES, frames))",
         "            used = self._serve(conn, 10 ** 9)",
         F + "test_ten_flooders_share_each_turn_and_a_light_message_goes_first",
         "one busy sender's backlog is dispatched in one turn and everyone's messages wait "
         "behind it")

mutation("light_waits_for_the_bulk_lane",
         "            if backlog and light_wait <= 0 and self._light_input_waiting():",
         "            if False:",
         F + "test_light_input_arriving_during_the_bulk_lane_is_served_after_the_slice",
         "a chat message that arrives during a flood waits for the whole turn's bulk")

mutation("no_room_pacing",
         "            if paced and conn.fans_out and conn.state == OPEN and not conn.closed:",
         "            if False:",
         F + "test_a_flooder_waits_while_the_room_is_backlogged_and_resumes_when_it_drains",
         "a flooder fills every reader's queue (memory grows to the output limits) instead of "
         "being slowed by TCP")

mutation("stalled_readers_pace_the_room",
         "        return sum(1 for c in self.backlogged if c.last_tx > since) * PACE_QUORUM > "
         "joined",
         "        return True",
         F + "test_a_reader_that_stopped_reading_does_not_pace_the_room",
         "two phones that stopped reading stall everyone's flood of messages")

mutation("download_chunks_ahead_of_chat",
         "            push = self.push_bulk if dl.framed else self.push",
         "            push = self.push",
         F + "test_chat_overtakes_the_queued_chunks_of_a_download",
         "a chat message waits behind megabytes of a download on the downloader's connection")

mutation("ws_download_framed",
         "            if rules.framed_only and conn.proto == \"ws\":",
         "            if rules.framed_only and conn.proto == \"framed-only\":",
         "test_http::test_ws_file_bytes_requests_are_bad_request_and_the_stream_stays_websocket",
         "a browser's WebSocket `download` pushes framed file bytes into the WebSocket stream, "
         "which breaks its connection")

mutation("turn_file_bytes_unbounded",
         "                if loop.file_bytes_left <= 0:\n                    loop.file_bytes_cut(self, wrote_file)",
         "                if False:\n                    loop.file_bytes_cut(self, wrote_file)",
         "test_fairness::test_a_turn_writes_at_most_turn_file_bytes_of_downloads_and_chat_still_goes",
         "30 downloaders get WRITE_BUDGET each per turn: a turn, and every chat message in it, "
         "waits for 30 MiB of copying")

mutation("turn_file_bytes_no_rotation",
         "            dirty = [c for c, wrote in waiting.items() if not wrote and c in dirty] + \\",
         "            dirty = [c for c, wrote in waiting.items() if c in dirty] + \\",
         "test_fairness::test_a_turn_writes_at_most_turn_file_bytes_of_downloads_and_chat_still_goes",
         "the downloader that spent the turn's file bytes goes first again: the others starve")

mutation("turn_file_bytes_http_unbounded",
         "                if file_bytes and loop.file_bytes_left <= 0:",
         "                if file_bytes and loop.file_bytes_left <= -(1 << 40):",
         "test_fairness::test_a_turn_writes_at_most_turn_file_bytes_of_downloads_and_chat_still_goes",
         "a browser's HTTP download is not counted in a turn's file bytes: each one adds "
         "WRITE_BUDGET to every turn")

mutation("light_cuts_the_bulk_lane_every_slice",
         "            light_wait -= used\n",
         "            light_wait = 0\n",
         "test_fairness::test_in_a_large_room_light_input_waits_for_more_of_the_bulk_lane",
         "in a room of 1,000 every light message ends the turn after 64 frames: the loop spends "
         "its time on a send to every client per turn (0.6x the fan-out)")

mutation("light_turn_gives_bulk_one_slice",
         "            frames = self.light_wait_frames() if self.chat.outbox.entries else \\",
         "            frames = BULK_SLICE_FRAMES if self.chat.outbox.entries else \\",
         "test_fairness::test_in_a_large_room_light_input_waits_for_more_of_the_bulk_lane",
         "a turn with light input gives the bulk lane one slice whatever the room's size")

mutation("failed_join_not_undone",
         "        self.outbox.make_durable(start, functools.partial(self._join_failed, conn))",
         "        pass",
         "test_chat::test_a_hello_whose_commit_fails_is_undone_and_may_be_sent_again",
         "a hello whose turn's commit fails leaves the client joined without a welcome: no "
         "broadcast reaches it and a second hello is refused")
