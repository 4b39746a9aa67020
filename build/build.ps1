<#
.SYNOPSIS
    Builds chatserver.exe and the release zip natively on Windows.

.DESCRIPTION
    1. Creates (once) a venv in build\cache\venv-windows with the pinned build tools
       from build\requirements-build.txt (PyInstaller and friends).
    2. Generates the icon and the version resource (build\cache\).
    3. Runs PyInstaller on build\chatserver.spec -> build\out\windows\chatserver.exe.
    4. Smoke-tests the exe: --version, then it must accept a TCP connection.
    5. Packs build\out\ChatServer-<version>-windows-x64.zip (make_release_zip.py).

.PARAMETER Python
    Python used to create the venv (3.9 or later). Default: "python" on PATH.

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File build\build.ps1
#>
param(
    [string]$Python = "python"
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$BuildDir = $PSScriptRoot
$RepoDir = Split-Path -Parent $BuildDir
$Cache = Join-Path $BuildDir 'cache'
$Venv = Join-Path $Cache 'venv-windows'
$VenvPython = Join-Path $Venv 'Scripts\python.exe'
$Exe = Join-Path $BuildDir 'out\windows\chatserver.exe'
$SmokePort = 55871
$SmokeTimeoutSeconds = 30

function Invoke-Checked {
    # Native commands do not throw on failure: check the exit code of each one.
    param([string]$File, [string[]]$Arguments)
    & $File @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$File $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

function Initialize-Venv {
    $requirements = Join-Path $BuildDir 'requirements-build.txt'
    $installed = Join-Path $Venv 'requirements-build.txt'
    if ((Test-Path $installed) -and
        ((Get-FileHash $installed).Hash -eq (Get-FileHash $requirements).Hash)) {
        return
    }
    Write-Host "Creating $Venv with the pinned build tools"
    if (Test-Path $Venv) { Remove-Item -Recurse -Force $Venv }
    Invoke-Checked $Python @('-m', 'venv', $Venv)
    Invoke-Checked $VenvPython @('-m', 'pip', 'install', '--disable-pip-version-check', '-r', $requirements)
    Copy-Item $requirements $installed
}

function Build-Exe {
    Invoke-Checked $VenvPython @((Join-Path $BuildDir 'make_icon.py'), (Join-Path $Cache 'chatserver.ico'))
    Invoke-Checked $VenvPython @((Join-Path $BuildDir 'version_info.py'),
                                 '--output', (Join-Path $Cache 'version_info.txt'))
    Invoke-Checked $VenvPython @('-m', 'PyInstaller', '--noconfirm',
                                 '--distpath', (Join-Path $BuildDir 'out\windows'),
                                 '--workpath', (Join-Path $Cache 'pyi-windows'),
                                 (Join-Path $BuildDir 'chatserver.spec'))
}

function Test-Exe {
    $version = & $Exe --version
    if ($LASTEXITCODE -ne 0) { throw "chatserver.exe --version failed" }
    Write-Host "Smoke test: $version"
    $dataDir = Join-Path $Cache 'smoke-data'
    $server = Start-Process -FilePath $Exe -PassThru -NoNewWindow -ArgumentList @(
        '--host', '127.0.0.1', '--port', $SmokePort, '--data-dir', "`"$dataDir`"",
        '--open', '--no-browser')
    try {
        $deadline = (Get-Date).AddSeconds($SmokeTimeoutSeconds)
        while ($true) {
            $client = New-Object System.Net.Sockets.TcpClient
            try { $client.Connect('127.0.0.1', $SmokePort); break }
            catch {
                if ((Get-Date) -gt $deadline) { throw "chatserver.exe did not listen within $SmokeTimeoutSeconds s" }
                Start-Sleep -Milliseconds 200
            }
            finally { $client.Close() }
        }
        Write-Host "Smoke test: chatserver.exe accepts connections on 127.0.0.1:$SmokePort"
    }
    finally {
        # /T: the one-file exe runs the server in a child process.
        & taskkill.exe /T /F /PID $server.Id | Out-Null
    }
}

Initialize-Venv
Build-Exe
Test-Exe
$zip = & $VenvPython (Join-Path $BuildDir 'make_release_zip.py') --exe $Exe
if ($LASTEXITCODE -ne 0) { throw "make_release_zip.py failed" }
Write-Host "Release zip: $zip"
