// LAN Chat: a client for chatserver.py. Dependencies are built once in
// config/dependencies.dart; this file only starts the app.

import 'package:flutter/foundation.dart';
import 'package:flutter/material.dart';

import 'config/dependencies.dart';
import 'screens/connect/connect_screen.dart';
import 'screens/connect/connect_view_model.dart';

Future<void> main() async {
  WidgetsFlutterBinding.ensureInitialized();
  final dependencies = await AppDependencies.create();
  runApp(LanChatApp(connectViewModel: dependencies.connectViewModel()));
}

class LanChatApp extends StatelessWidget {
  const LanChatApp({super.key, required this.connectViewModel});

  final ConnectViewModel connectViewModel;

  static const Color _seed = Colors.teal;

  @override
  Widget build(BuildContext context) {
    return MaterialApp(
      title: 'LAN Chat',
      theme: ThemeData(colorScheme: ColorScheme.fromSeed(seedColor: _seed)),
      darkTheme: ThemeData(
        colorScheme: ColorScheme.fromSeed(seedColor: _seed, brightness: Brightness.dark),
      ),
      // Served by chatserver.py, the web build finds the server and the
      // pairing token in its own URL (http://host:port/#k=token).
      home: ConnectScreen(
        viewModel: connectViewModel,
        initialLink: kIsWeb ? Uri.base.toString() : null,
      ),
    );
  }
}
