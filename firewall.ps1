<#
.SYNOPSIS
    Allows other computers and phones on the local network to reach LAN Chat Server.

.DESCRIPTION
    Adds one inbound Windows Firewall rule that allows TCP connections to the chat
    port on Private and Domain networks (and on Public networks only with -Public).
    Running it again updates the rule instead of adding a second one; -Remove
    deletes it.

    Changing the firewall needs administrator rights: when started without them,
    the script starts itself again elevated (a UAC prompt) with the same arguments.

.PARAMETER Port
    TCP port the chat server listens on. Default: 5555, the server's default port.

.PARAMETER Remove
    Delete the rule instead of adding or updating it.

.PARAMETER Public
    Also allow connections on networks Windows classifies as Public (cafes,
    airports). Only use this on a network you trust.

.PARAMETER RuleName
    Display name of the firewall rule. Default: "LAN Chat Server".

.EXAMPLE
    .\firewall.ps1
    Allows TCP port 5555 on Private and Domain networks.

.EXAMPLE
    .\firewall.ps1 -Port 6000 -Public
    Allows TCP port 6000 on Private, Domain and Public networks.

.EXAMPLE
    .\firewall.ps1 -Remove
    Deletes the "LAN Chat Server" rule.

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File .\firewall.ps1
    Runs the script when the execution policy blocks downloaded scripts.

.NOTES
    Needs Windows 8 / Server 2012 or later (NetSecurity module).
#>
[CmdletBinding()]
param(
    [ValidateRange(1, 65535)]
    [int]$Port = 5555,
    [switch]$Remove,
    [switch]$Public,
    [ValidateNotNullOrEmpty()]
    [string]$RuleName = "LAN Chat Server"
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Test-Administrator {
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal($identity)
    return $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}

function Start-Elevated {
    # Start-Process joins -ArgumentList with spaces, so values with spaces are quoted here.
    $arguments = @('-NoProfile', '-ExecutionPolicy', 'Bypass', '-NoExit',
                   '-File', "`"$PSCommandPath`"", '-Port', $Port, '-RuleName', "`"$RuleName`"")
    if ($Remove) { $arguments += '-Remove' }
    if ($Public) { $arguments += '-Public' }
    Write-Host "Administrator rights are needed: asking Windows to run this script elevated..."
    try {
        Start-Process -FilePath 'powershell.exe' -Verb RunAs -ArgumentList $arguments
    }
    catch {
        Write-Host "Not elevated (the prompt was declined?): $($_.Exception.Message)"
        exit 1
    }
    Write-Host "The elevated window shows the result."
}

function Get-ChatRule {
    return @(Get-NetFirewallRule -DisplayName $RuleName -ErrorAction SilentlyContinue)
}

function Remove-ChatRule {
    $rules = Get-ChatRule
    if ($rules.Count -eq 0) {
        Write-Host "No firewall rule named '$RuleName': nothing to remove."
        return
    }
    $rules | Remove-NetFirewallRule
    Write-Host "Removed firewall rule '$RuleName'."
}

function Set-ChatRule {
    $profiles = @('Private', 'Domain')
    if ($Public) { $profiles += 'Public' }
    # Remove-then-create keeps exactly one rule, whatever was there before
    # (even two rules with this name made by hand).
    $existing = Get-ChatRule
    if ($existing.Count -gt 0) { $existing | Remove-NetFirewallRule }
    $rule = @{
        DisplayName = $RuleName
        Description = 'Lets devices on the local network reach LAN Chat Server.'
        Group       = 'LAN Chat Server'
        Direction   = 'Inbound'
        Action      = 'Allow'
        Protocol    = 'TCP'
        LocalPort   = $Port
        Profile     = $profiles
        Enabled     = 'True'
    }
    New-NetFirewallRule @rule | Out-Null
    $verb = if ($existing.Count -gt 0) { 'Updated' } else { 'Added' }
    $networks = $profiles -join ', '
    Write-Host "$verb firewall rule '$RuleName': allow inbound TCP port $Port on $networks networks."
    if (-not $Public) {
        Write-Host "Public networks stay blocked (use -Public to allow them too)."
    }
}

if (-not (Test-Administrator)) {
    Start-Elevated
    exit 0
}

try {
    if ($Remove) { Remove-ChatRule } else { Set-ChatRule }
}
catch {
    Write-Host "Failed: $($_.Exception.Message)"
    exit 1
}
