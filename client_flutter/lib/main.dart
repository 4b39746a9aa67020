// LAN Chat: a client for chatserver.py. Dependencies are built once in
// config/dependencies.dart; this file only starts the app.

import 'package:flutter/material.dart';
import 'package:flutter_web_plugins/url_strategy.dart';

import 'config/dependencies.dart';
import 'screens/connect/connect_screen.dart';
import 'screens/connect/connect_view_model.dart';
import 'services/platform.dart';

Future<void> main() async {
  // Web: the pairing link is the page URL (http://host:port/app/#k=TOKEN).
  // Read it before Flutter's URL strategy runs: the default (hash) strategy
  // would take "#k=TOKEN" for a route. The path strategy leaves the fragment
  // alone; on other platforms both calls do nothing.
  final pageLink = takePageLink();
  usePathUrlStrategy();
  WidgetsFlutterBinding.ensureInitialized();
  final dependencies = await AppDependencies.create();
  runApp(LanChatApp(connectViewModel: dependencies.connectViewModel(), pageLink: pageLink));
}

class LanChatApp extends StatelessWidget {
  const LanChatApp({super.key, required this.connectViewModel, this.pageLink});

  final ConnectViewModel connectViewModel;

  /// The page URL in the web build, else null.
  final String? pageLink;

  static const Color _seed = Colors.teal;

  @override
  Widget build(BuildContext context) {
    return MaterialApp(
      title: 'LAN Chat',
      theme: ThemeData(colorScheme: ColorScheme.fromSeed(seedColor: _seed)),
      darkTheme: ThemeData(
        colorScheme: ColorScheme.fromSeed(seedColor: _seed, brightness: Brightness.dark),
      ),
      home: ConnectScreen(viewModel: connectViewModel, pageLink: pageLink),
    );
  }
}
