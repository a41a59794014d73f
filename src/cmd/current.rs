//! `lockrun current`: who holds a resource, since when, until when.

use super::{Ctx, Failure};
use crate::cli::{CurrentArgs, Format};
use crate::exit::Exit;
use crate::lease::{escape, rfc3339, Lease};

pub async fn current(ctx: &Ctx, args: CurrentArgs) -> Result<Exit, Failure> {
    let (resource, plan) = ctx.plan(&args.resource)?;
    let backend = ctx.open(&plan).await?;
    let Some(lease) = backend.current(&resource).await? else {
        return Err(Failure::outcome(
            Exit::NotHeld,
            format!("{} is not held", escape(resource.as_str())),
        ));
    };
    let format = if args.id_only {
        Format::Id
    } else {
        args.format
    };
    super::out(format_args!("{}", render(&lease, format)?))?;
    Ok(Exit::Success)
}

/// Renders a lease. In the text formats, control characters in text read back from the store are
/// escaped, to a terminal or not: a principal holding a newline must not forge a row, nor an
/// escape sequence reach whoever reads the output. JSON is exact.
pub fn render(lease: &Lease, format: Format) -> Result<String, Failure> {
    let text = escape;
    let token = lease
        .fencing_token
        .map_or_else(|| "-".to_owned(), |t| t.to_string());
    let fields = [
        ("resource", text(lease.resource.as_str())),
        ("principal", text(&lease.principal)),
        ("lease_id", text(lease.id.as_str())),
        ("fencing_token", token),
        ("acquired_at", rfc3339(lease.acquired_at)),
        ("expires_at", rfc3339(lease.expires_at)),
    ];
    let values = || fields.iter().map(|(_, v)| v.as_str());
    Ok(match format {
        Format::Id => text(lease.id.as_str()),
        Format::Json => serde_json::to_string(&lease.to_json())
            .map_err(|e| Failure::new(Exit::Internal, format!("cannot encode JSON: {e}")))?,
        Format::Rows => fields
            .iter()
            .map(|(k, v)| format!("{:<14} {v}", format!("{k}:")))
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Oneline => values().collect::<Vec<_>>().join("\t"),
        Format::Lines => values().collect::<Vec<_>>().join("\n"),
        Format::Cols => {
            let widths: Vec<usize> = fields
                .iter()
                .map(|(k, v)| k.len().max(v.chars().count()))
                .collect();
            let line = |cells: Vec<String>| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                padded.join("  ").trim_end().to_owned()
            };
            let header = line(fields.iter().map(|(k, _)| k.to_uppercase()).collect());
            format!("{header}\n{}", line(values().map(str::to_owned).collect()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{LeaseId, Resource};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn lease() -> Lease {
        Lease {
            resource: Resource::new("db").unwrap(),
            id: LeaseId::parse("abc123").unwrap(),
            principal: "evil\x1b[31m@host".into(),
            fencing_token: Some(7),
            acquired_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_003_600),
            ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn formats() {
        let l = lease();
        assert_eq!(render(&l, Format::Id).unwrap(), "abc123");
        let rows = render(&l, Format::Rows).unwrap();
        assert!(rows.contains("fencing_token: 7"), "{rows}");
        assert!(
            rows.contains("acquired_at:   2027-01-15T08:00:00.000Z"),
            "{rows}"
        );
        assert!(!rows.contains('\x1b'), "escaped, to a terminal or not");
        let one = render(&l, Format::Oneline).unwrap();
        assert_eq!(one.split('\t').count(), 6);
        assert!(!one.contains('\x1b'));
        let lines = render(&l, Format::Lines).unwrap();
        assert_eq!(
            lines.lines().collect::<Vec<_>>(),
            one.split('\t').collect::<Vec<_>>()
        );
        let cols = render(&l, Format::Cols).unwrap();
        let (head, row) = cols.split_once('\n').unwrap();
        assert!(head.starts_with("RESOURCE  PRINCIPAL"), "{head}");
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            one.split('\t').collect::<Vec<_>>()
        );
        // Each value starts under its header.
        let at = head.find("LEASE_ID").unwrap();
        assert_eq!(&row[at..at + 6], "abc123", "{cols}");
        assert!(!cols.contains('\x1b'));
        let json: serde_json::Value =
            serde_json::from_str(&render(&l, Format::Json).unwrap()).unwrap();
        for k in [
            "resource",
            "principal",
            "lease_id",
            "fencing_token",
            "acquired_at",
            "expires_at",
        ] {
            assert!(json.get(k).is_some(), "{k}");
        }
        assert_eq!(json["fencing_token"], 7);
    }
}
