import 'dart:io';

import 'package:flutter/widgets.dart';

/// [path] drawn with [fit]; [errorBuilder] when it cannot be read.
Widget localImage(
  String path, {
  double? width,
  double? height,
  BoxFit? fit,
  int? cacheWidth,
  required ImageErrorWidgetBuilder errorBuilder,
}) =>
    Image.file(
      File(path),
      width: width,
      height: height,
      fit: fit,
      cacheWidth: cacheWidth,
      errorBuilder: errorBuilder,
    );
