// First screen: scan the pairing QR code, paste the link, or type host,
// port and token; recent servers are one tap away.

import 'package:flutter/foundation.dart';
import 'package:flutter/material.dart';
import 'package:flutter/services.dart';

import '../../models/result.dart';
import '../../models/server_address.dart';
import '../../services/recent_servers.dart';
import '../chat/chat_screen.dart';
import '../chat/chat_view_model.dart';
import 'connect_view_model.dart';
import 'scan_screen.dart';

class ConnectScreen extends StatefulWidget {
  const ConnectScreen({super.key, required this.viewModel, this.pageLink});

  final ConnectViewModel viewModel;

  /// The page URL in the web build (`http://host:port/app/#k=TOKEN`): the
  /// server is the page's own, only the nick (and maybe the token) is asked.
  final String? pageLink;

  @override
  State<ConnectScreen> createState() => _ConnectScreenState();
}

class _ConnectScreenState extends State<ConnectScreen> {
  final _formKey = GlobalKey<FormState>();
  final _nick = TextEditingController();
  final _nickFocus = FocusNode();
  final _link = TextEditingController();
  final _host = TextEditingController();
  final _port = TextEditingController(text: '$defaultPort');
  final _token = TextEditingController();

  /// Camera scanning where mobile_scanner works well: phones and tablets.
  bool get _canScan =>
      !kIsWeb &&
      (defaultTargetPlatform == TargetPlatform.android ||
          defaultTargetPlatform == TargetPlatform.iOS);

  /// The server that served this page (web build), which is the only one a
  /// page may talk to; null in the apps.
  ServerAddress? _pageServer;

  @override
  void initState() {
    super.initState();
    final page = widget.pageLink;
    final server = page == null ? null : ServerAddress.fromPage(Uri.parse(page));
    if (server != null) {
      _pageServer = server;
      _fill(server);
    }
    widget.viewModel.load().then((_) {
      if (!mounted) return;
      if (_nick.text.isEmpty) _nick.text = widget.viewModel.lastNick;
      // A reloaded page no longer has its #k= fragment (it is removed at
      // start): the token saved after the last connection fills in.
      final page = _pageServer;
      if (page != null && _token.text.isEmpty) {
        final saved = widget.viewModel.savedToken(page);
        if (saved != null) _token.text = saved;
      }
    });
  }

  @override
  void dispose() {
    _nick.dispose();
    _nickFocus.dispose();
    _link.dispose();
    _host.dispose();
    _port.dispose();
    _token.dispose();
    super.dispose();
  }

  /// Fills host, port and token from a pairing link; true if it parsed.
  bool _applyLink(String text, {bool quiet = false}) {
    switch (ServerAddress.parse(text)) {
      case Ok(:final value):
        _fill(value);
        return true;
      case Err(:final error):
        if (!quiet) _showMessage(error.message);
        return false;
    }
  }

  void _fill(ServerAddress address) {
    _host.text = address.host;
    _port.text = '${address.port}';
    _token.text = address.token ?? '';
  }

  Future<void> _paste() async {
    final data = await Clipboard.getData(Clipboard.kTextPlain);
    final text = data?.text;
    if (text == null || !mounted) return;
    _link.text = text.trim();
    _applyLink(text);
  }

  Future<void> _scan() async {
    final code = await Navigator.of(context).push<String>(
      MaterialPageRoute<String>(builder: (_) => const ScanScreen()),
    );
    if (code == null || !mounted) return;
    _link.text = code;
    if (_applyLink(code) && ConnectViewModel.validateNick(_nick.text) == null) {
      await _connect();
    }
  }

  Future<void> _connect() async {
    if (!(_formKey.currentState?.validate() ?? false)) return;
    final page = _pageServer;
    if (page != null) _fill(page.withToken(_token.text.trim())); // never another host
    final token = _token.text.trim();
    final address = ServerAddress(
      host: _host.text.trim(),
      port: int.parse(_port.text.trim()),
      token: token.isEmpty ? null : token,
    );
    final result = await widget.viewModel.connect(address, _nick.text);
    if (!mounted) return;
    switch (result) {
      case Ok(:final value):
        await _openChat(value);
      case Err() when widget.viewModel.nickRefused:
        // nick_owned, room_locked...: the sentence shows under the form;
        // the nick is selected, so typing another replaces it. No retry
        // on its own: only another nick can get in.
        _nickFocus.requestFocus();
        _nick.selection = TextSelection(baseOffset: 0, extentOffset: _nick.text.length);
      case Err():
        break; // the view model shows the reason
    }
  }

  Future<void> _openChat(ChatViewModel session) async {
    await Navigator.of(context).push(
      MaterialPageRoute<void>(builder: (_) => ChatScreen(viewModel: session)),
    );
    // Back from the chat: this session is over.
    session.dispose();
  }

  Future<void> _connectRecent(RecentServer server) async {
    _fill(server.address);
    if (_nick.text.trim().isEmpty) _nick.text = server.nick;
    await _connect();
  }

  void _showMessage(String text) {
    ScaffoldMessenger.of(context).showSnackBar(SnackBar(content: Text(text)));
  }

  @override
  Widget build(BuildContext context) {
    final viewModel = widget.viewModel;
    return Scaffold(
      appBar: AppBar(title: const Text('LAN Chat')),
      body: SafeArea(
        child: ListenableBuilder(
          listenable: viewModel,
          builder: (context, _) => Center(
            child: ConstrainedBox(
              constraints: const BoxConstraints(maxWidth: 520),
              child: Form(
                key: _formKey,
                child: ListView(
                  padding: const EdgeInsets.all(16),
                  children: [
                    TextFormField(
                      controller: _nick,
                      focusNode: _nickFocus,
                      decoration: const InputDecoration(
                        labelText: 'Your nick',
                        prefixIcon: Icon(Icons.person_outline),
                      ),
                      textInputAction: TextInputAction.next,
                      maxLength: maxNickLength,
                      validator: (value) => ConnectViewModel.validateNick(value ?? ''),
                    ),
                    const SizedBox(height: 8),
                    if (_pageServer case final page?)
                      ListTile(
                        contentPadding: EdgeInsets.zero,
                        leading: const Icon(Icons.dns_outlined),
                        title: Text('Server ${page.label}'),
                        subtitle: const Text('the server this page comes from'),
                      ),
                    if (_pageServer == null && _canScan) ...[
                      FilledButton.icon(
                        onPressed: viewModel.connecting ? null : _scan,
                        icon: const Icon(Icons.qr_code_scanner),
                        label: const Text('Scan the pairing QR code'),
                      ),
                      const SizedBox(height: 16),
                    ],
                    if (_pageServer == null) ...[
                      TextField(
                        controller: _link,
                        decoration: InputDecoration(
                          labelText: 'Pairing link',
                          hintText: 'http://192.168.1.20:5555/#k=…',
                          prefixIcon: const Icon(Icons.link),
                          suffixIcon: IconButton(
                            tooltip: 'Paste',
                            onPressed: _paste,
                            icon: const Icon(Icons.content_paste),
                          ),
                        ),
                        keyboardType: TextInputType.url,
                        onSubmitted: (text) => _applyLink(text),
                        onChanged: (text) => _applyLink(text, quiet: true),
                      ),
                      const SizedBox(height: 16),
                      Text('Or enter the address', style: Theme.of(context).textTheme.titleSmall),
                      Row(
                        crossAxisAlignment: CrossAxisAlignment.start,
                        children: [
                          Expanded(
                            flex: 3,
                            child: TextFormField(
                              controller: _host,
                              decoration: const InputDecoration(labelText: 'Host or IP address'),
                              keyboardType: TextInputType.url,
                              validator: (value) =>
                                  (value ?? '').trim().isEmpty ? 'Enter the server address.' : null,
                            ),
                          ),
                          const SizedBox(width: 12),
                          Expanded(
                            child: TextFormField(
                              controller: _port,
                              decoration: const InputDecoration(labelText: 'Port'),
                              keyboardType: TextInputType.number,
                              validator: _validatePort,
                            ),
                          ),
                        ],
                      ),
                    ],
                    TextFormField(
                      controller: _token,
                      decoration: const InputDecoration(
                        labelText: 'Pairing token',
                        helperText: 'Leave empty if the server runs with --open',
                      ),
                    ),
                    const SizedBox(height: 16),
                    if (viewModel.error != null)
                      Padding(
                        padding: const EdgeInsets.only(bottom: 12),
                        child: Text(
                          viewModel.error!,
                          style: TextStyle(color: Theme.of(context).colorScheme.error),
                        ),
                      ),
                    FilledButton(
                      onPressed: viewModel.connecting ? null : _connect,
                      child: viewModel.connecting
                          ? const SizedBox.square(
                              dimension: 20,
                              child: CircularProgressIndicator(strokeWidth: 2),
                            )
                          : const Text('Connect'),
                    ),
                    if (_pageServer == null && viewModel.recent.isNotEmpty) ...[
                      const SizedBox(height: 24),
                      Text('Recent servers', style: Theme.of(context).textTheme.titleSmall),
                      for (final server in viewModel.recent)
                        ListTile(
                          contentPadding: EdgeInsets.zero,
                          leading: const Icon(Icons.history),
                          title: Text(server.address.label),
                          subtitle: Text('as ${server.nick}'),
                          onTap: viewModel.connecting ? null : () => _connectRecent(server),
                          trailing: IconButton(
                            tooltip: 'Forget',
                            onPressed: () => viewModel.forget(server),
                            icon: const Icon(Icons.delete_outline),
                          ),
                        ),
                    ],
                  ],
                ),
              ),
            ),
          ),
        ),
      ),
    );
  }

  static String? _validatePort(String? value) {
    final port = int.tryParse((value ?? '').trim());
    return port == null || port < 1 || port > 65535 ? '1–65535' : null;
  }
}
