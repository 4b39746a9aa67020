import 'package:flutter/widgets.dart';

/// Browsers have no local files: files are shown from their URL instead.
Widget localImage(
  String path, {
  double? width,
  double? height,
  BoxFit? fit,
  int? cacheWidth,
  required ImageErrorWidgetBuilder errorBuilder,
}) =>
    SizedBox(width: width, height: height);
