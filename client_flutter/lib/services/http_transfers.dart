// File transfers for the web build, over the HTTP routes of PROTOCOL.md §5
// ("Files over HTTP (browsers)"): POST /files to upload, GET /files/<id>/<name>
// to download — the browser itself saves what it downloads.
//
// The session never goes into a URL ("a session in the query string is
// refused"): requests this code makes carry `Authorization: Bearer <session>`,
// and links the browser follows by itself (a download opened in a new tab)
// work through the `lanchat_session` cookie that `POST /session` sets after
// every welcome.

import 'dart:async';
import 'dart:convert';

import 'package:http/http.dart' as http;

import '../models/result.dart';
import '../models/shared_file.dart';
import 'chat_client.dart';
import 'file_io.dart';
import 'file_transfers.dart';

/// `Authorization: Bearer <session>` for the HTTP file routes.
Map<String, String> sessionHeaders(String session) => {'Authorization': 'Bearer $session'};

class HttpTransfers implements FileTransfers {
  HttpTransfers(this._client, {http.Client Function()? httpClient})
      : _newHttpClient = httpClient ?? http.Client.new {
    _subscription = _client.events.listen(_onChatEvent);
  }

  final ChatClient _client;
  final http.Client Function() _newHttpClient;
  final StreamController<TransferStatus> _updates = StreamController<TransferStatus>.broadcast();
  final Map<String, http.Client> _running = {};
  StreamSubscription<ChatEvent>? _subscription;

  @override
  Stream<TransferStatus> get updates => _updates.stream;

  @override
  bool get canDownload => false;

  @override
  void download(SharedFile file) {}

  @override
  Future<String?> localPath(SharedFile file) async => null;

  /// `GET /files/<id>/<name>[?inline=1]`: no secret in it, so a link that
  /// is copied or pasted lets nobody read a file they could not read anyway.
  /// Null until the first welcome (nothing could read it yet).
  @override
  Uri? browserUrl(SharedFile file, {bool inline = false}) {
    if (_client.session == null) return null;
    return _client.address.httpBase.replace(
      pathSegments: ['files', file.id, file.name],
      queryParameters: inline ? {'inline': '1'} : null,
    );
  }

  /// The session of the current connection ("the session changes with
  /// every connection, a takeover included").
  @override
  Map<String, String> get requestHeaders {
    final session = _client.session;
    return session == null ? const {} : sessionHeaders(session);
  }

  /// After every welcome: `POST /session` with the new session as the body,
  /// answered with the HttpOnly cookie that the browser then sends with the
  /// file links it opens itself.
  void _onChatEvent(ChatEvent event) {
    if (event case SessionStarted(:final welcome) when welcome.session.isNotEmpty) {
      unawaited(_postSession(welcome.session));
    }
  }

  Future<void> _postSession(String session) async {
    final client = _newHttpClient();
    try {
      await client.post(
        _client.address.httpBase.replace(path: '/session'),
        headers: {'Content-Type': 'text/plain'},
        body: session,
      );
    } on Exception {
      // Thumbnails and uploads carry the header anyway; only links opened
      // by the browser itself need the cookie, and the next welcome retries.
    } finally {
      client.close();
    }
  }

  @override
  String upload(UploadSource source, {String? to, String? caption}) {
    final cid = _client.newCid();
    unawaited(_upload(cid, source, to, caption));
    return cid;
  }

  /// `POST /files?name=N&cid=C[&to=T][&sha256=H][&text=CAPTION]` with the
  /// raw file as the body and the session in `Authorization`; the answer is
  /// 201 with the file `msg`.
  Future<void> _upload(String cid, UploadSource source, String? to, String? caption) async {
    void report(TransferState state, {int sent = 0, AppError? error}) => _emit(TransferStatus(
          key: cid,
          direction: TransferDirection.upload,
          name: source.name,
          size: source.size,
          transferred: sent,
          state: state,
          to: to,
          error: error,
        ));

    final session = _client.session;
    if (session == null) {
      report(TransferState.failed, error: const AppError('offline', 'Not connected.'));
      return;
    }
    report(TransferState.running);
    final client = _newHttpClient();
    _running[cid] = client;
    try {
      final body = await source.read(0, source.size);
      final uri = _client.address.httpBase.replace(path: '/files', queryParameters: {
        'name': source.name,
        'cid': cid,
        'to': ?to,
        'sha256': await source.sha256Hex(),
        if (caption != null && caption.isNotEmpty) 'text': caption,
      });
      final response = await client.post(
        uri,
        headers: {
          ...sessionHeaders(session),
          'Content-Type': source.mime ?? 'application/octet-stream',
        },
        body: body,
      );
      if (response.statusCode == 201) {
        report(TransferState.done, sent: source.size);
      } else {
        report(TransferState.failed, error: _httpError(response));
      }
    } on Exception catch (error) {
      final cancelled = !_running.containsKey(cid);
      report(cancelled ? TransferState.cancelled : TransferState.failed,
          error: cancelled ? null : AppError('upload_failed', '$error'));
    } finally {
      _running.remove(cid)?.close();
      await source.close();
    }
  }

  /// "Errors are JSON bodies `{"error": <code>, "message": <sentence>}`".
  static AppError _httpError(http.Response response) {
    try {
      final body = jsonDecode(response.body);
      if (body is Map<String, dynamic>) {
        return AppError('${body['error']}', '${body['message']}');
      }
    } on FormatException {
      // not JSON: fall through to the status line
    }
    return AppError('http_${response.statusCode}', response.reasonPhrase ?? 'Upload failed.');
  }

  /// Closing the HTTP client aborts the request in flight.
  @override
  void cancel(String key) => _running.remove(key)?.close();

  void _emit(TransferStatus status) {
    if (!_updates.isClosed) _updates.add(status);
  }

  @override
  Future<void> dispose() async {
    await _subscription?.cancel();
    for (final client in _running.values) {
      client.close();
    }
    _running.clear();
    await _updates.close();
  }
}
